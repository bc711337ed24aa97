package kademlia

import "sync/atomic"

// LookupStats counts the operations a Node finished for its callers
// (FindNode, FindValue, Provide, Bootstrap; not the refreshes and
// republications it runs by itself), for metrics.
type LookupStats struct {
	ByKind [OpRefresh + 1]uint64 // finished operations by OpKind
	Failed uint64                // of them ended with an error
	Rounds uint64                // the sum of their Result.Rounds
	RPCs   uint64                // the sum of their Result.Msgs
}

// lookupCounters are written by Run and read by any goroutine.
type lookupCounters struct {
	byKind              [OpRefresh + 1]atomic.Uint64
	failed, rounds, rpc atomic.Uint64
}

func (c *lookupCounters) count(r Result) {
	if int(r.Kind) < len(c.byKind) {
		c.byKind[r.Kind].Add(1)
	}
	if r.Err != nil {
		c.failed.Add(1)
	}
	c.rounds.Add(uint64(max(r.Rounds, 0)))
	c.rpc.Add(uint64(max(r.Msgs, 0)))
}

// LookupStats returns the counters; safe from any goroutine.
func (n *Node) LookupStats() LookupStats {
	c := &n.lookups
	st := LookupStats{Failed: c.failed.Load(), Rounds: c.rounds.Load(), RPCs: c.rpc.Load()}
	for k := range c.byKind {
		st.ByKind[k] = c.byKind[k].Load()
	}
	return st
}
