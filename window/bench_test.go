package window

import "testing"

// BenchmarkWindowSim downloads 100 MB through five simulated circuits per
// scenario and reports, besides the simulator's own speed:
//   - efficiency%: the achieved rate over the sum of the five best circuits'
//     rates;
//   - dup%: chunks received twice over chunks delivered;
//   - first-ms: virtual time to the first in-order chunk;
//   - maxspan-chunks: the most chunks between the read position and the
//     highest chunk asked or held ahead of it (the memory the window
//     bounds), over the iterations.
func BenchmarkWindowSim(b *testing.B) { benchScenarios(b, scenarioNames) }

// BenchmarkWindowSimMore runs other setups the same way: more jitter,
// uneven circuits, small answer messages, slow paths, fast circuits, one
// circuit at a third of the others' rate, two deaths.
func BenchmarkWindowSimMore(b *testing.B) { benchScenarios(b, moreScenarios) }

func benchScenarios(b *testing.B, names []string) {
	const size = 100e6
	for _, name := range names {
		b.Run(name, func(b *testing.B) {
			var eff, dup, first, span float64
			for i := 0; i < b.N; i++ {
				cfg, capacity := scenario(name, size, uint64(i+1))
				s := newSim(cfg)
				s.run()
				if len(s.errs) > 0 || !s.done {
					b.Fatalf("run %d: done=%v fail=%v errors %q", i, s.done, s.failErr, s.errs)
				}
				eff += s.efficiency(capacity)
				dup += float64(s.dups) / float64(s.chunks)
				first += float64(s.firstAt.Milliseconds())
				span = max(span, float64(s.maxSpan))
			}
			n := float64(b.N)
			b.ReportMetric(100*eff/n, "efficiency%")
			b.ReportMetric(100*dup/n, "dup%")
			b.ReportMetric(first/n, "first-ms")
			b.ReportMetric(span, "maxspan-chunks")
		})
	}
}
