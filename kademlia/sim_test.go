package kademlia

import (
	"fmt"
	"runtime"
	"runtime/debug"
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
	cfg := DefaultSimConfig(n, seed)
	cfg.Core.StopOnValue = true
	return simNetworkCfg(tb, cfg, records, churn)
}

func simNetworkCfg(tb testing.TB, cfg SimConfig, records int, churn float64) (*Sim, []proto.HashName) {
	tb.Helper()
	s, err := NewSim(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return simNetworkOf(tb, s, records, churn)
}

// simNetworkOf builds s, provides records random keys and takes the
// fraction churn of the nodes down.
func simNetworkOf(tb testing.TB, s *Sim, records int, churn float64) (*Sim, []proto.HashName) {
	tb.Helper()
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
			tb.Fatalf("provide %d: %v %v (stored %d, closest %d, msgs %d)", i, err, r.Err, r.Stored, len(r.Closest), r.Msgs)
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
	cases := []struct {
		name  string
		loss  float64
		churn float64
	}{
		{"no churn", 0, 0},
		{"quarter gone", 0, 0.25},
		{"quarter gone, 5% loss", 0.05, 0.25},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultSimConfig(300, 1)
			cfg.Core.StopOnValue = true
			cfg.Loss = c.loss
			s, keys := simNetworkCfg(t, cfg, 20, c.churn)
			st := simLookups(t, s, keys, 100)
			t.Logf("success %d/%d, rounds median %d p99 %d, msgs/lookup %.1f", st.ok, st.total, st.pct(0.5), st.pct(0.99), float64(st.msgs)/float64(st.total))
			if st.ok < st.total*97/100 {
				t.Errorf("only %d/%d lookups found the record", st.ok, st.total)
			}
			if st.pct(0.5) > 5 {
				t.Errorf("median rounds %d", st.pct(0.5))
			}
		})
	}
}

// TestSimLatencyEdges: the calendar's windows are as long as the
// shortest latency, so a network whose messages may take no time at all
// (windows of a nanosecond, nearly every event beyond the calendar) or
// whose joins all come at once still builds, finds its records, and runs
// the same with one worker or two.
func TestSimLatencyEdges(t *testing.T) {
	for _, c := range []struct {
		name     string
		min, max time.Duration
		spacing  time.Duration
	}{
		{"zero shortest latency", 0, 20 * time.Millisecond, 10 * time.Millisecond},
		{"joins at once", 10 * time.Millisecond, 100 * time.Millisecond, 0},
		{"fixed latency", 5 * time.Millisecond, 5 * time.Millisecond, time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			var traces []uint64
			for _, workers := range []int{1, 2} {
				cfg := DefaultSimConfig(60, 3)
				cfg.Core.StopOnValue = true
				cfg.LatencyMin, cfg.LatencyMax, cfg.JoinSpacing = c.min, c.max, c.spacing
				cfg.Workers = workers
				s, err := NewSim(cfg)
				if err != nil {
					t.Fatal(err)
				}
				s.parallelMin = 1
				s, keys := simNetworkOf(t, s, 5, 0)
				st := simLookups(t, s, keys, 20)
				if st.ok < st.total*95/100 {
					t.Fatalf("%d workers: %d/%d lookups found the record", workers, st.ok, st.total)
				}
				traces = append(traces, s.TraceHash())
			}
			if traces[0] != traces[1] {
				t.Fatalf("trace %x with 1 worker, %x with 2", traces[0], traces[1])
			}
		})
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
// after a quarter of the nodes went down without notice. Every network is
// built by simulated joins, outside the timer; ns/op is the wall time of
// one lookup.
func BenchmarkSimLookup(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		for _, churn := range []float64{0, 0.25} {
			var s *Sim
			var keys []proto.HashName
			b.Run(fmt.Sprintf("nodes=%d/churn=%d%%", n, int(churn*100)), func(b *testing.B) {
				if n >= 100000 {
					// A soft limit: the GC runs more often near it instead of
					// letting the heap double the ~1.2 GB that stay live.
					defer debug.SetMemoryLimit(debug.SetMemoryLimit(1700 << 20))
				}
				if s == nil {
					// Built once per sub-benchmark, not once per b.N probe.
					if n >= 100000 {
						b.Logf("huge pages advised for %d heap mappings", hugeHeap(1600<<20))
					}
					start := time.Now()
					var m0, m1 runtime.MemStats
					runtime.GC()
					runtime.ReadMemStats(&m0)
					cfg := DefaultSimConfig(n, 1)
					cfg.Core.StopOnValue = true
					s, keys = simNetworkCfg(b, cfg, 100, churn)
					runtime.ReadMemStats(&m1)
					b.Logf("build %d nodes by joins + 100 records: %v wall, %d messages, heap in use %d MB, %d MB allocated in all, %d GCs taking %.1f %% of the CPU",
						n, time.Since(start).Round(time.Millisecond), s.Sent, m1.HeapInuse>>20, (m1.TotalAlloc-m0.TotalAlloc)>>20, m1.NumGC-m0.NumGC, 100*m1.GCCPUFraction)
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

// TestSimRepublish: records live RecordTTL; a provider that stays up
// republishes its record so it outlives that, one gone does not.
func TestSimRepublish(t *testing.T) {
	cfg := DefaultSimConfig(200, 5)
	cfg.Core.StopOnValue = true
	s, err := NewSim(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Build(); err != nil {
		t.Fatal(err)
	}
	kept, lost := proto.HashName{1, 1}, proto.HashName{2, 2}
	if r, err := s.Provide(10, kept); err != nil || r.Stored == 0 {
		t.Fatalf("provide: %v %d", err, r.Stored)
	}
	if r, err := s.Provide(11, lost); err != nil || r.Stored == 0 {
		t.Fatalf("provide: %v %d", err, r.Stored)
	}
	s.SetAlive(11, false)
	if r, _ := s.FindValue(50, lost); len(r.Records) == 0 {
		t.Fatalf("record of the gone provider not found before it expires")
	}
	for elapsed := time.Duration(0); elapsed <= cfg.Core.RecordTTL; elapsed += cfg.Core.RepublishInterval / 2 {
		if err := s.Advance(cfg.Core.RepublishInterval / 2); err != nil {
			t.Fatal(err)
		}
		if err := s.RunIdle(); err != nil {
			t.Fatal(err)
		}
	}
	now := uint64(s.Now().Unix())
	for _, from := range []int{50, 60, 70} {
		r, err := s.FindValue(from, kept)
		if err != nil || len(r.Records) == 0 || r.Records[0].Expires <= now {
			t.Fatalf("republished record not found from %d: %v %d", from, err, len(r.Records))
		}
		if r, _ := s.FindValue(from, lost); len(r.Records) != 0 {
			t.Fatalf("expired record still served")
		}
	}
}

// BenchmarkSimBuild measures building a 10,000-node network: every node
// joins through the bridge (FIND_PEER, FIND_NODE of itself, refresh of
// its non-full buckets). ns/op is the wall time of one build.
func BenchmarkSimBuild(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			var live uint64
			var msgs uint64
			for range b.N {
				s, err := NewSim(DefaultSimConfig(n, 1))
				if err != nil {
					b.Fatal(err)
				}
				if err := s.Build(); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				runtime.GC()
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				live, msgs = m.HeapAlloc, s.Sent
				runtime.KeepAlive(s)
				b.StartTimer()
			}
			b.ReportMetric(float64(live)/(1<<20), "live-MB")
			b.ReportMetric(float64(msgs), "msgs")
		})
	}
}

// sybilNetwork builds n nodes with the given lookup paths, has `records`
// honest nodes provide one hash_name each, then turns frac of the nodes
// into colluders (see Sim.SetColluders).
func sybilNetwork(tb testing.TB, n int, seed uint64, paths, records int, frac float64) (*Sim, []proto.HashName, []int) {
	tb.Helper()
	cfg := DefaultSimConfig(n, seed)
	cfg.Core.Paths = paths
	s, err := NewSim(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.Build(); err != nil {
		tb.Fatal(err)
	}
	s.SetColluders(frac)
	keys := make([]proto.HashName, records)
	providers := make([]int, records)
	for i := range keys {
		for j := range keys[i] {
			keys[i][j] = byte(s.Rand().Uint32())
		}
		providers[i] = honestNode(s)
		if _, err := s.Provide(providers[i], keys[i]); err != nil {
			tb.Fatalf("provide %d: %v", i, err)
		}
	}
	return s, keys, providers
}

func honestNode(s *Sim) int {
	for {
		if i := s.RandomAlive(); !s.Colluder(i) {
			return i
		}
	}
}

// sybilLookups runs n FIND_VALUEs from honest nodes; a lookup succeeds
// when it returns the real provider's record.
func sybilLookups(tb testing.TB, s *Sim, keys []proto.HashName, providers []int, n int) simStats {
	var st simStats
	for i := range n {
		k := i % len(keys)
		r, err := s.FindValue(honestNode(s), keys[k])
		if err != nil {
			tb.Fatal(err)
		}
		found := false
		for _, rec := range r.Records {
			found = found || rec.ORDB == s.Core(providers[k]).ID()
		}
		st.add(r, found)
	}
	return st
}

// TestSimSybil: with a fifth of 1,000 nodes colluding, lookups on two
// disjoint paths still find the real providers.
func TestSimSybil(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 1,000-node network twice")
	}
	for _, paths := range []int{1, 2} {
		s, keys, providers := sybilNetwork(t, 1000, 3, paths, 20, 0.2)
		st := sybilLookups(t, s, keys, providers, 200)
		t.Logf("paths %d: success %d/%d, rounds median %d, msgs/lookup %.1f", paths, st.ok, st.total, st.pct(0.5), float64(st.msgs)/float64(st.total))
		if paths == 2 && st.ok < st.total*97/100 {
			t.Errorf("2 disjoint paths: only %d/%d lookups found the real provider", st.ok, st.total)
		}
	}
}

// BenchmarkSimSybil measures FIND_VALUE lookups in a 10,000-node network
// of which 20 % collude (they answer lookups only with each other,
// acknowledge STOREs and drop them, and answer FIND_VALUE with bogus
// records), with one and with two disjoint paths. success% counts lookups
// that returned the real provider's record.
func BenchmarkSimSybil(b *testing.B) {
	for _, paths := range []int{1, 2, 3} {
		var s *Sim
		var keys []proto.HashName
		var providers []int
		b.Run(fmt.Sprintf("nodes=10000/colluders=20%%/paths=%d", paths), func(b *testing.B) {
			if s == nil {
				start := time.Now()
				s, keys, providers = sybilNetwork(b, 10000, 1, paths, 100, 0.2)
				b.Logf("build + 100 records: %v", time.Since(start).Round(time.Millisecond))
			}
			b.ResetTimer()
			st := sybilLookups(b, s, keys, providers, b.N)
			b.StopTimer()
			b.ReportMetric(100*float64(st.ok)/float64(st.total), "success%")
			b.ReportMetric(float64(st.pct(0.5)), "rounds-median")
			b.ReportMetric(float64(st.msgs)/float64(st.total), "msgs/lookup")
		})
	}
}

// TestSimWorkersSameRun: the windows of a run are cut into groups of
// nodes run by parallel workers, each worker queuing what it sends in
// lists of its own, and the run is the same - every message, its time
// and latency, every lookup's outcome - with 1, 2 or 3 workers, with loss
// and churn. Every window goes to the workers here, however few its
// events.
func TestSimWorkersSameRun(t *testing.T) {
	type outcome struct {
		trace, sent, lost uint64
		st                simStats
	}
	run := func(workers int) outcome {
		cfg := DefaultSimConfig(400, 11)
		cfg.Core.StopOnValue = true
		cfg.Loss = 0.03
		cfg.Workers = workers
		s, err := NewSim(cfg)
		if err != nil {
			t.Fatal(err)
		}
		s.parallelMin = 1
		if err := s.Build(); err != nil {
			t.Fatal(err)
		}
		keys := make([]proto.HashName, 10)
		for i := range keys {
			keys[i][0], keys[i][1] = byte(i), 0x5a
			if _, err := s.Provide(s.RandomAlive(), keys[i]); err != nil {
				t.Fatal(err)
			}
		}
		s.Kill(0.25)
		st := simLookups(t, s, keys, 60)
		if err := s.Advance(2 * time.Hour); err != nil { // hourly refreshes, in windows too
			t.Fatal(err)
		}
		if err := s.RunIdle(); err != nil {
			t.Fatal(err)
		}
		if workers > 1 && s.parallel == 0 {
			t.Fatalf("%d workers: no window ran in parallel", workers)
		}
		return outcome{s.TraceHash(), s.Sent, s.Lost, st}
	}
	one := run(1)
	if one.st.ok < one.st.total*97/100 {
		t.Fatalf("1 worker: %d/%d lookups found the record", one.st.ok, one.st.total)
	}
	for _, w := range []int{2, 3} {
		got := run(w)
		if got.trace != one.trace || got.sent != one.sent || got.lost != one.lost || got.st.ok != one.st.ok ||
			got.st.msgs != one.st.msgs || !slices.Equal(got.st.rounds, one.st.rounds) {
			t.Fatalf("%d workers: trace %x, %d sent, %d lost, %d/%d found, %d msgs; 1 worker: %x, %d, %d, %d/%d, %d",
				w, got.trace, got.sent, got.lost, got.st.ok, got.st.total, got.st.msgs,
				one.trace, one.sent, one.lost, one.st.ok, one.st.total, one.st.msgs)
		}
	}
}
