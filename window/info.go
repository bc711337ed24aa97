package window

import "time"

// CircuitInfo is what the window measured of one circuit, for a progress
// display or a status page.
type CircuitInfo struct {
	ID     CircuitID
	Active bool // downloading (not a spare)
	// Rate is the estimated rate in chunks per second (0 until measured).
	Rate float64
	// TM is the least time to first data lately (0 until measured).
	TM time.Duration
	// InFlight is the chunks asked on it and not yet arrived.
	InFlight int
}

// Circuits returns what the window knows of each circuit, in the order
// they were added.
func (w *Window) Circuits() []CircuitInfo {
	out := make([]CircuitInfo, 0, len(w.circs))
	for _, c := range w.circs {
		out = append(out, CircuitInfo{ID: c.id, Active: c.state == active, Rate: c.rate(), TM: c.tm(), InFlight: c.outstanding})
	}
	return out
}

// Capacity is what the active circuits carry together, in chunks per
// second: the sum of their measured rates (0 until one is measured). At a
// download's end, its chunks / its time / Capacity is its efficiency: how
// much of what its circuits could bring it got.
func (w *Window) Capacity() float64 {
	var sum float64
	for _, c := range w.circs {
		if c.state == active {
			sum += c.rate()
		}
	}
	return sum
}
