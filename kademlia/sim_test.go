package kademlia

import (
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"veil/proto"
)

// simStats summarises lookups.
type simStats struct {
	ok, total int
	rounds    []int
	msgs      int
}

func (st *simStats) add(r Result, found bool) {
	st.total++
	if found {
		st.ok++
	}
	st.rounds = append(st.rounds, r.Rounds)
	st.msgs += r.Msgs
}

func (st *simStats) pct(p float64) int {
	if len(st.rounds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(st.rounds))
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// simNetwork builds a network of n nodes, has `records` random nodes
// provide one hash_name each, then takes churn of the nodes down.
func simNetwork(tb testing.TB, n int, seed uint64, records int, churn float64) (*Sim, []proto.HashName) {
	tb.Helper()
	cfg := DefaultSimConfig(n, seed)
	cfg.Core.StopOnValue = true
	s, err := NewSim(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.Build(); err != nil {
		tb.Fatal(err)
	}
	keys := make([]proto.HashName, records)
	for i := range keys {
		for j := range keys[i] {
			keys[i][j] = byte(s.Rand().Uint32())
		}
		r, err := s.Provide(s.RandomAlive(), keys[i])
		if err != nil || r.Stored == 0 {
			tb.Fatalf("provide %d: %v (stored %d)", i, err, r.Stored)
		}
	}
	s.Kill(churn)
	return s, keys
}

func simLookups(tb testing.TB, s *Sim, keys []proto.HashName, n int) simStats {
	var st simStats
	for i := range n {
		key := keys[i%len(keys)]
		r, err := s.FindValue(s.RandomAlive(), key)
		if err != nil {
			tb.Fatal(err)
		}
		st.add(r, len(r.Records) > 0 && r.Records[0].Key == key)
	}
	return st
}

func TestSimSmall(t *testing.T) {
	s, keys := simNetwork(t, 300, 1, 20, 0.25)
	st := simLookups(t, s, keys, 100)
	t.Logf("success %d/%d, rounds median %d p99 %d, msgs/lookup %.1f", st.ok, st.total, st.pct(0.5), st.pct(0.99), float64(st.msgs)/float64(st.total))
	if st.ok < st.total*95/100 {
		t.Errorf("only %d/%d lookups found the record", st.ok, st.total)
	}
}

func TestSimReplay(t *testing.T) {
	run := func(seed uint64) (uint64, simStats) {
		s, keys := simNetwork(t, 200, seed, 5, 0.25)
		st := simLookups(t, s, keys, 20)
		return s.TraceHash(), st
	}
	h1, st1 := run(7)
	h2, st2 := run(7)
	h3, _ := run(8)
	if h1 != h2 || !slices.Equal(st1.rounds, st2.rounds) || st1.msgs != st2.msgs {
		t.Fatalf("same seed, different runs: %x vs %x", h1, h2)
	}
	if h1 == h3 {
		t.Fatalf("different seeds gave the same trace %x", h1)
	}
}

// BenchmarkSimLookup measures FIND_VALUE lookups in simulated networks
// (StopOnValue: a lookup ends at the first provider record), before and
// after a quarter of the nodes went down without notice. Building the
// network is outside the timer; ns/op is the wall time of one lookup.
func BenchmarkSimLookup(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		for _, churn := range []float64{0, 0.25} {
			var s *Sim
			var keys []proto.HashName
			b.Run(fmt.Sprintf("nodes=%d/churn=%d%%", n, int(churn*100)), func(b *testing.B) {
				if s == nil {
					// Built once per sub-benchmark, not once per b.N probe.
					start := time.Now()
					var m0, m1 runtime.MemStats
					runtime.GC()
					runtime.ReadMemStats(&m0)
					s, keys = simNetwork(b, n, 1, 100, churn)
					runtime.ReadMemStats(&m1)
					b.Logf("build %d nodes + 100 records: %v wall, %d messages, heap in use %d MB, %d MB allocated in all",
						n, time.Since(start).Round(time.Millisecond), s.Sent, m1.HeapInuse>>20, (m1.TotalAlloc-m0.TotalAlloc)>>20)
				}
				b.ResetTimer()
				st := simLookups(b, s, keys, b.N)
				b.StopTimer()
				b.ReportMetric(100*float64(st.ok)/float64(st.total), "success%")
				b.ReportMetric(float64(st.pct(0.5)), "rounds-median")
				b.ReportMetric(float64(st.pct(0.99)), "rounds-p99")
				b.ReportMetric(float64(st.msgs)/float64(st.total), "msgs/lookup")
			})
		}
	}
}
