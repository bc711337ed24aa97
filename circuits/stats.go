package circuits

// What a node's status page and metrics read from a Switch. The counters
// are the circuits' own atomics, summed when asked: nothing here runs per
// cell.

// Subscribe adds f to the handlers of circuit events (beside
// SwitchConfig.OnEvent). Like OnEvent, f runs synchronously in the
// goroutine of the circuit that changed and must not block.
func (sw *Switch) Subscribe(f func(Event)) { sw.subscribe(f) }

// Origins returns our own circuits open now, those being built included,
// in no particular order.
func (sw *Switch) Origins() []*Circuit {
	sw.mu.RLock()
	defer sw.mu.RUnlock()
	var out []*Circuit
	for _, q := range sw.circs {
		if c, ok := q.(*Circuit); ok {
			out = append(out, c)
		}
	}
	return out
}

// RelayedStats sums what the circuits of others this node carries now
// moved here. Closed circuits are not counted: their totals come with
// their EventClosed.
func (sw *Switch) RelayedStats() CircuitStats {
	sw.mu.RLock()
	defer sw.mu.RUnlock()
	var sum CircuitStats
	for k, q := range sw.circs {
		// A relayed circuit is in the table under both its links: count
		// it once, under the link its CREATE2 came on.
		rc, ok := q.(*relayCirc)
		if !ok || k.l != rc.prev || k.id != rc.prevID {
			continue
		}
		s := rc.ep.stats.snapshot()
		sum.CellsSent += s.CellsSent
		sum.CellsRecv += s.CellsRecv
		sum.BytesSent += s.BytesSent
		sum.BytesRecv += s.BytesRecv
	}
	return sum
}
