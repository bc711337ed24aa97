package ordb

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"veil/chunkstore"
	"veil/circuits"
	"veil/circuits/link"
	"veil/proto"
	"veil/window"
)

// benchNet is a requester and five disjoint 3-hop paths (two relays and an
// ORDB each, all serving one published content) on 127.0.0.1. With limit
// set, every node of the paths caps what its links write at limit bytes
// per second (link.WriteLimit, what relay_bandwidth_rate sets), as a home
// uplink caps a real relay.
type benchNet struct {
	net   *getNet
	paths [][]proto.NodeDescriptor
	limit int
}

func newBenchNet(b *testing.B, size int, limit int) *benchNet {
	net := &getNet{req: newORDBNode(b)}
	net.pub, net.name, net.data = publish(b, size)
	srv := &Server{Store: net.pub}
	bn := &benchNet{net: net, limit: limit}
	relay := func() *ordbNode {
		lcfg := link.DefaultConfig()
		if limit > 0 {
			lcfg.WriteLimit = link.NewWriteLimit(limit, 64<<10)
		}
		return newORDBNodeWith(b, lcfg)
	}
	for range 5 {
		r1, r2, o := relay(), relay(), relay()
		o.sw.Handle("ordb", func(s *circuits.Stream) { srv.Serve(s) })
		bn.paths = append(bn.paths, []proto.NodeDescriptor{r1.desc, r2.desc, o.desc})
	}
	return bn
}

// benchGet fetches the content through the first n paths into a fresh
// store per iteration (fsync off: the disk is not what is measured).
func benchGet(b *testing.B, bn *benchNet, n int, stallMin time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	tc := newTestCircuits(b, bn.net)
	tc.paths = bn.paths[:n]
	defer tc.closeAll()
	var ids []window.CircuitID
	for _, p := range bn.paths[:n] {
		c, err := bn.net.req.sw.Build(ctx, p)
		if err != nil {
			b.Fatal(err)
		}
		id := window.CircuitID(c.ID())
		tc.circs[id] = c
		ids = append(ids, id)
	}
	b.SetBytes(int64(len(bn.net.data)))
	cpu0, iters := processCPU(), 0
	var idle, eff float64
	replaced := 0
	for i := 0; b.Loop(); i++ {
		iters++
		cfg := chunkstore.DefaultConfig(filepath.Join(b.TempDir(), fmt.Sprintf("r%d.db", i)))
		cfg.NoSync = true
		st, err := chunkstore.Open(cfg)
		if err != nil {
			b.Fatal(err)
		}
		wc := window.DefaultConfig(bn.net.name)
		wc.Circuits = n
		if stallMin > 0 {
			wc.StallMin = stallMin
		}
		g, err := NewGet(GetConfig{Name: bn.net.name, Store: st, Circuits: tc, Initial: ids, Window: wc})
		if err != nil {
			b.Fatal(err)
		}
		tr := newGetTrace(bn.limit)
		g.trace = tr.arrival
		_, err = g.Run(ctx)
		tr.close()
		idle += tr.idle()
		if err != nil {
			b.Fatal(err)
		}
		eff += g.Efficiency()
		if len(tc.replaced) != 0 {
			replaced += len(tc.replaced)
			b.Logf("circuits replaced: %v", tc.replaced)
			tc.replaced = nil
		}
		st.Close()
	}
	if bn.limit > 0 {
		b.ReportMetric(100*idle/float64(iters), "idle%")
	}
	b.ReportMetric(100*eff/float64(iters), "window-eff%")
	b.ReportMetric(float64(replaced)/float64(iters), "replaced/op")
	// CPU of the whole process (every node) per byte: unlike MB/s, it
	// barely moves when other work shares the machine.
	if cpu := processCPU() - cpu0; cpu > 0 {
		b.ReportMetric(float64(iters*len(bn.net.data))/1e6/cpu.Seconds(), "MB/cpu-s")
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkGetFiveCircuits is veil get's transfer: 100 MB through five
// 3-hop circuits on 127.0.0.1, each range verified and stored, with every
// relay's links capped at 8 MB/s (relay_bandwidth_rate) and unlimited.
// Compare with BenchmarkGetOneCircuit in the same run, and with circuits'
// BenchmarkCircuit3Hop (one circuit carrying raw bytes).
func BenchmarkGetFiveCircuits(b *testing.B) { benchRates(b, 5) }

// BenchmarkGetOneCircuit is BenchmarkGetFiveCircuits through one circuit.
func BenchmarkGetOneCircuit(b *testing.B) { benchRates(b, 1) }

func benchRates(b *testing.B, n int) {
	for _, rate := range []int{8_000_000, 0} {
		name := "unlimited"
		if rate > 0 {
			name = fmt.Sprintf("relay_bandwidth_rate=%dMB", rate/1_000_000)
		}
		bn := newBenchNet(b, 100<<20, rate)
		b.Run(name, func(b *testing.B) { benchGet(b, bn, n, 0) })
	}
}

// BenchmarkGetLimited caps every relay's links at a relay bandwidth rate
// and compares one circuit with five over 20 MB, at two rates.
func BenchmarkGetLimited(b *testing.B) {
	for _, rate := range []int{8_000_000, 2_000_000} {
		bn := newBenchNet(b, 20<<20, rate)
		for _, n := range []int{1, 5} {
			b.Run(fmt.Sprintf("rate=%dMB/s/circuits=%d", rate/1_000_000, n), func(b *testing.B) { benchGet(b, bn, n, 0) })
		}
	}
}
