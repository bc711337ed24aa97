package circuits

import "time"

// Renew makes new streams use fresh circuits, as Tor's NEWNYM does: the
// pool lets go of every circuit it has (FindCircuits no longer offers
// them, TunnelData refuses them) and builds replacements at once. A
// circuit let go of is closed as soon as it is idle (no cell for one
// CheckInterval), so streams still running on it finish; all are closed
// when the pool closes.
func (p *Pool) Renew() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	old := p.circs
	p.circs = nil
	for _, c := range old {
		delete(p.activity, c)
	}
	p.wg.Add(1)
	p.mu.Unlock()
	p.poke()
	go p.retire(old)
}

// retire closes each of cs once it is idle or the pool closes.
func (p *Pool) retire(cs []*Circuit) {
	defer p.wg.Done()
	cells := func(c *Circuit) uint64 {
		st := c.Stats()
		return st.CellsSent + st.CellsRecv
	}
	last := make(map[*Circuit]uint64, len(cs))
	for _, c := range cs {
		last[c] = cells(c)
	}
	t := time.NewTicker(p.cfg.CheckInterval)
	defer t.Stop()
	for len(last) > 0 {
		select {
		case <-p.stop:
			for c := range last {
				c.Close()
			}
			return
		case <-t.C:
		}
		for c, n := range last {
			select {
			case <-c.Done():
				delete(last, c)
				continue
			default:
			}
			if m := cells(c); m != n {
				last[c] = m
				continue
			}
			c.Close()
			delete(last, c)
		}
	}
}
