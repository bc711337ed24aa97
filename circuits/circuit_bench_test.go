package circuits

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"veil/circuits/onion"
)

// countingSink is a service that reads everything and reports the total
// after each read on a channel (for benchmarks that wait for delivery).
func countingSink(total *atomic.Int64, done chan<- struct{}, want *atomic.Int64) Service {
	return func(s *Stream) {
		buf := make([]byte, 64<<10)
		for {
			n, err := s.Read(buf)
			if total.Add(int64(n)) >= want.Load() && want.Load() > 0 && n > 0 {
				select {
				case done <- struct{}{}:
				default:
				}
			}
			if err != nil {
				return
			}
		}
	}
}

// BenchmarkCircuit3Hop pushes bulk bytes from the origin through a built
// 3-hop circuit to a sink at the last hop, all nodes in this process on
// 127.0.0.1, and reports MB/s of delivered payload.
func BenchmarkCircuit3Hop(b *testing.B) {
	b.Run("tor-windows", func(b *testing.B) { benchCircuit3Hop(b, nil) })
	for _, k := range []int{2, 4} {
		b.Run(fmt.Sprintf("%dx-windows", k), func(b *testing.B) {
			benchCircuit3Hop(b, func(i int, cfg *SwitchConfig) {
				cfg.CircWindow, cfg.CircIncrement = k*onion.CircWindowStart, k*onion.CircWindowIncrement
				cfg.StreamWindow, cfg.StreamIncrement = k*onion.StreamWindowStart, k*onion.StreamWindowIncrement
				cfg.QueueCells = 2*cfg.CircWindow + 512
			})
		})
	}
}

// BenchmarkCircuit3HopMem is BenchmarkCircuit3Hop over in-memory links: the
// circuit layer's own cost (onion crypto, queues, windows) without TLS and
// sockets.
func BenchmarkCircuit3HopMem(b *testing.B) {
	benchCircuitBulk(b, newMemNodes(b, 4))
}

func benchCircuit3Hop(b *testing.B, tweak func(int, *SwitchConfig)) {
	benchCircuitBulk(b, newNet(b, 4, tweak))
}

func benchCircuitBulk(b *testing.B, nodes []*cnode) {
	var total, want atomic.Int64
	done := make(chan struct{}, 1)
	nodes[3].sw.Handle("count", countingSink(&total, done, &want))
	c := build(b, nodes[0], nodes[1], nodes[2], nodes[3])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := c.OpenStream(ctx, "count")
	if err != nil {
		b.Fatal(err)
	}
	const chunk = 64 << 10
	buf := make([]byte, chunk)
	b.SetBytes(chunk)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	want.Store(int64(b.N) * chunk)
	for range b.N {
		if _, err := s.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		b.Fatalf("sink got %d of %d bytes", total.Load(), want.Load())
	}
	b.StopTimer()
	// CPU spent by the whole process (all four nodes) per byte delivered:
	// unlike MB/s, this barely moves when other work shares the machine.
	if cpu := cpuTime() - cpu0; cpu > 0 {
		b.ReportMetric(float64(b.N)*chunk/1e6/cpu.Seconds(), "MB/cpu-s")
	}
	s.Close()
}

// cpuTime is the user+system CPU time of this process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCircuitBuild3Hop measures building a 3-hop circuit on 127.0.0.1
// (links already up after the first build); it reports the median.
func BenchmarkCircuitBuild3Hop(b *testing.B) {
	nodes := newNet(b, 4, nil)
	build(b, nodes[0], nodes[1], nodes[2], nodes[3]).Close() // warm the links
	var times []time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		c := build(b, nodes[0], nodes[1], nodes[2], nodes[3])
		times = append(times, time.Since(t0))
		b.StopTimer()
		c.Close()
		b.StartTimer()
	}
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "median-ms")
}

// BenchmarkCircuitFirstByte3Hop measures a request/response on a built
// 3-hop circuit: open a stream to echo, send 1 byte, read it back.
func BenchmarkCircuitFirstByte3Hop(b *testing.B) {
	nodes := newNet(b, 4, nil)
	c := build(b, nodes[0], nodes[1], nodes[2], nodes[3])
	ctx := context.Background()
	var times []time.Duration
	one := []byte{42}
	got := make([]byte, 1)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		s, err := c.OpenStream(ctx, "echo")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Write(one); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(s, got); err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(t0))
		s.Close()
	}
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "median-ms")
}

// BenchmarkCircuit3HopDown is BenchmarkCircuit3Hop the other way: the last
// hop's service writes bulk bytes, the origin reads them (a download, the
// direction DB_DATA flows).
func BenchmarkCircuit3HopDown(b *testing.B) {
	nodes := newNet(b, 4, nil)
	const chunk = 64 << 10
	nodes[3].sw.Handle("source", func(s *Stream) {
		buf := make([]byte, chunk)
		for {
			if _, err := s.Write(buf); err != nil {
				return
			}
		}
	})
	c := build(b, nodes[0], nodes[1], nodes[2], nodes[3])
	s, err := c.OpenStream(context.Background(), "source")
	if err != nil {
		b.Fatal(err)
	}
	s.SetReadDeadline(time.Now().Add(5 * time.Minute))
	buf := make([]byte, chunk)
	b.SetBytes(chunk)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for range b.N {
		if _, err := io.ReadFull(s, buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if cpu := cpuTime() - cpu0; cpu > 0 {
		b.ReportMetric(float64(b.N)*chunk/1e6/cpu.Seconds(), "MB/cpu-s")
	}
	s.Close()
}
