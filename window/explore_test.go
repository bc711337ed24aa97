package window

import (
	"fmt"
	"testing"
	"time"
)

func TestExploreUneven(t *testing.T) {
	cfg, _ := scenario("uneven", 100e6, 1)
	s := newSim(cfg)
	last := time.Duration(0)
	var lastRecv uint64
	for s.q.Len() > 0 && !s.w.Over() {
		e := popEv(s)
		s.now = e.at
		s.step(e)
		for _, a := range s.w.actions {
			if r, ok := a.(ReplaceCircuit); ok {
				t.Logf("%v replace %v", s.now, r)
			}
		}
		s.flush()
		if s.now-last >= 100*time.Millisecond {
			st := s.w.Stats()
			line := ""
			for _, c := range s.w.circs {
				line += fmt.Sprintf(" [%d r=%.1f tm=%v out=%d tgt=%d]", c.id, c.rate()*498/1e6, c.tm().Round(time.Millisecond), c.outstanding, s.w.target(c))
			}
			t.Logf("%v MB/s=%.1f base=%d span=%d win=%d%s", s.now.Round(time.Millisecond), float64(st.Received-lastRecv)*498/1e6/(s.now-last).Seconds(), st.Base, st.Span, st.Window, line)
			last, lastRecv = s.now, st.Received
		}
	}
	t.Logf("done %v", s.doneAt)
}
