package ordb

import (
	"bufio"
	"fmt"
	"os"
	"time"

	"veil/window"
)

// getTrace follows a benchmark's Get: every answer's arrival per circuit,
// for the share of time circuits spend in gaps (an idle pipeline), and,
// with VEIL_GET_TRACE=file, a line per arrival with the window's state:
//
//	seconds circuit kind chunks base span window in-flight id:in-flight:rate:tm-ms...
type getTrace struct {
	t0    time.Time
	last  map[window.CircuitID]time.Time
	first map[window.CircuitID]time.Time
	gaps  time.Duration // sum of gaps longer than gapMin, over circuits
	out   *bufio.Writer
	f     *os.File
}

// gapMin: a circuit at 8 MB/s brings an answer (64 chunks) every 4 ms;
// 20 ms without one is a pipeline run dry.
const gapMin = 20 * time.Millisecond

func newGetTrace() *getTrace {
	tr := &getTrace{t0: time.Now(), last: map[window.CircuitID]time.Time{}, first: map[window.CircuitID]time.Time{}}
	if path := os.Getenv("VEIL_GET_TRACE"); path != "" {
		f, err := os.Create(path)
		if err == nil {
			tr.f, tr.out = f, bufio.NewWriter(f)
		}
	}
	return tr
}

func (tr *getTrace) arrival(w *window.Window, a arrival) {
	if a.kind == arrRange {
		id := a.c.id
		if l, ok := tr.last[id]; ok {
			if gap := a.at.Sub(l); gap > gapMin {
				tr.gaps += gap
			}
		} else {
			tr.first[id] = a.at
		}
		tr.last[id] = a.at
	}
	if tr.out == nil {
		return
	}
	st := w.Stats()
	fmt.Fprintf(tr.out, "%.6f %d %d %d %d %d %d %d", a.at.Sub(tr.t0).Seconds(), a.c.id, a.kind, a.n, st.Base, st.Span, st.Window, st.InFlight)
	for _, c := range w.Circuits() {
		fmt.Fprintf(tr.out, " %d:%d:%.0f:%.1f", c.ID, c.InFlight, c.Rate, c.TM.Seconds()*1000)
	}
	fmt.Fprintln(tr.out)
}

// gapShare is the share of the circuits' time (first to last answer, each)
// spent in gaps.
func (tr *getTrace) gapShare() float64 {
	var span time.Duration
	for id, f := range tr.first {
		span += tr.last[id].Sub(f)
	}
	if span <= 0 {
		return 0
	}
	return float64(tr.gaps) / float64(span)
}

func (tr *getTrace) close() {
	if tr.out != nil {
		tr.out.Flush()
		tr.f.Close()
	}
}
