package ordb

import (
	"bufio"
	"fmt"
	"os"
	"time"

	"veil/proto"
	"veil/window"
)

// getTrace follows a benchmark's Get: every answer's arrival per circuit,
// for the share of time circuits carry nothing (their relays capped at
// limit bytes per second: 1 - the time their answers' cells take at the
// cap / the time from their first answer to their last), and,
// with VEIL_GET_TRACE=file, a line per arrival with the window's state:
//
//	seconds circuit kind chunks base span window in-flight id:in-flight:rate:tm-ms...
type getTrace struct {
	t0    time.Time
	last  map[window.CircuitID]time.Time
	first map[window.CircuitID]time.Time
	limit int           // bytes per second each relay writes; 0: none
	busy  time.Duration // what the answers take at the cap, over circuits
	out   *bufio.Writer
	f     *os.File
}

func newGetTrace(limit int) *getTrace {
	tr := &getTrace{t0: time.Now(), limit: limit, last: map[window.CircuitID]time.Time{}, first: map[window.CircuitID]time.Time{}}
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
		if _, ok := tr.last[id]; !ok {
			tr.first[id] = a.at
		} else if tr.limit > 0 {
			// What this answer's cells take at the cap (the first one's
			// are not in the span).
			cells := (a.n*proto.ChunkSize + proto.RelayDataSize - 1) / proto.RelayDataSize
			tr.busy += time.Duration(float64(cells*proto.CellSize) / float64(tr.limit) * float64(time.Second))
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

// idle is the share of the circuits' time (first to last answer, each)
// they carried nothing at their cap.
func (tr *getTrace) idle() float64 {
	var span time.Duration
	for id, f := range tr.first {
		span += tr.last[id].Sub(f)
	}
	if span <= 0 || tr.limit == 0 {
		return 0
	}
	return 1 - float64(tr.busy)/float64(span)
}

func (tr *getTrace) close() {
	if tr.out != nil {
		tr.out.Flush()
		tr.f.Close()
	}
}
