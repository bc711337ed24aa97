package kademlia

import (
	"bytes"
	"slices"
	"time"

	"veil/proto"
)

// candidate states
const (
	candNew      = iota // not queried yet
	candWaiting         // RPC in flight
	candAnswered        // answered
	candFailed          // timed out or unreachable
)

type candidate struct {
	dist     proto.NodeID // XOR distance to the target
	contact  proto.DHTContact
	state    uint8
	round    int // 1 for the seeds, parent's round + 1 for contacts learned
	deadline time.Time
}

// LookupKind says what a lookup asks for.
type LookupKind uint8

// Lookup kinds.
const (
	FindNode  LookupKind = iota // FIND_NODE: the K closest nodes
	FindValue                   // FIND_VALUE: provider records (and the K closest)
)

// Lookup is an iterative Kademlia lookup as a pure state machine: the
// caller sends the RPCs it returns and feeds back Answer, Fail and Tick.
// It keeps Alpha RPCs in flight to the closest contacts not yet asked and
// ends when the K closest contacts it has seen, failures aside, have all
// answered (or, for FIND_VALUE with StopOnValue, at the first records).
// Not safe for concurrent use.
type Lookup struct {
	self, target proto.NodeID
	kind         LookupKind
	k, alpha     int
	maxCands     int
	timeout      time.Duration
	stopOnValue  bool

	// cands is sorted by distance to target. A contact once added is
	// never added again: it stays in cands, or it was dropped for being
	// beyond the MaxCandidates closest, where it can never come back as
	// cands only gains closer contacts.
	cands    []candidate
	inflight int
	records  []proto.ProviderRecord
	done     bool
	rounds   int
	msgs     int
}

// NewLookup starts a lookup of target for node self from seeds (usually
// the table's closest contacts). Call Next to get the first RPCs.
func NewLookup(self, target proto.NodeID, kind LookupKind, seeds []proto.DHTContact, cfg Config) *Lookup {
	l := &Lookup{
		self: self, target: target, kind: kind,
		k: cfg.K, alpha: cfg.Alpha, maxCands: cfg.MaxCandidates,
		timeout: cfg.RPCTimeout, stopOnValue: cfg.StopOnValue,
		cands: make([]candidate, 0, 4*cfg.K),
	}
	if kind == FindValue {
		l.alpha = cfg.AlphaFindValue
	}
	l.add(seeds, 1)
	return l
}

// Target is the ID looked up.
func (l *Lookup) Target() proto.NodeID { return l.target }

// Kind is what the lookup asks for.
func (l *Lookup) Kind() LookupKind { return l.kind }

// search returns where id is or would be in cands.
func (l *Lookup) search(id proto.NodeID) (int, bool) {
	d := proto.Xor(id, l.target)
	return slices.BinarySearchFunc(l.cands, d, func(c candidate, d proto.NodeID) int {
		return bytes.Compare(c.dist[:], d[:])
	})
}

func (l *Lookup) index(id proto.NodeID) int {
	if i, found := l.search(id); found {
		return i
	}
	return -1
}

func (l *Lookup) add(cs []proto.DHTContact, round int) {
	for _, c := range cs {
		if c.ID == l.self || c.ID.IsZero() || !c.Addr.IsValid() {
			continue
		}
		i, dup := l.search(c.ID)
		if dup || i >= l.maxCands {
			continue // known, or farther than everything kept
		}
		l.cands = slices.Insert(l.cands, i, candidate{dist: proto.Xor(c.ID, l.target), contact: c, round: round})
		if len(l.cands) > l.maxCands {
			// Drop the farthest candidate not in flight.
			for j := len(l.cands) - 1; j >= 0; j-- {
				if l.cands[j].state != candWaiting {
					l.cands = slices.Delete(l.cands, j, j+1)
					break
				}
			}
		}
	}
}

// Next returns the contacts to query now (each marked in flight until
// Answer, Fail or its deadline), and updates Done. The query goes out as
// FIND_NODE or FIND_VALUE for Target per Kind.
func (l *Lookup) Next(now time.Time) []proto.DHTContact {
	if l.done {
		return nil
	}
	var out []proto.DHTContact
	seen, pending := 0, false
	for i := range l.cands {
		c := &l.cands[i]
		if c.state == candFailed {
			continue
		}
		if seen == l.k {
			break
		}
		seen++
		switch c.state {
		case candWaiting:
			pending = true
		case candNew:
			pending = true
			if l.inflight < l.alpha {
				c.state, c.deadline = candWaiting, now.Add(l.timeout)
				l.inflight++
				l.msgs++
				out = append(out, c.contact)
			}
		}
	}
	if !pending {
		l.finish()
	}
	return out
}

func (l *Lookup) finish() {
	l.done = true
	if l.rounds == 0 {
		seen := 0
		for _, c := range l.cands {
			if c.state == candAnswered && seen < l.k {
				seen++
				l.rounds = max(l.rounds, c.round)
			}
		}
	}
}

// Answer feeds the answer of from: closer contacts and, for FIND_VALUE,
// records already verified by the caller. It returns the next RPCs to
// send. An answer from a contact not in flight is ignored.
func (l *Lookup) Answer(from proto.NodeID, contacts []proto.DHTContact, records []proto.ProviderRecord, now time.Time) []proto.DHTContact {
	i := l.index(from)
	if l.done || i < 0 || l.cands[i].state != candWaiting {
		return nil
	}
	l.cands[i].state = candAnswered
	l.inflight--
	round := l.cands[i].round
	for _, r := range records {
		if r.Key != proto.HashName(l.target) {
			continue
		}
		if j := slices.IndexFunc(l.records, func(x proto.ProviderRecord) bool { return x.ORDB == r.ORDB }); j >= 0 {
			if r.Expires > l.records[j].Expires {
				l.records[j] = r
			}
			continue
		}
		l.records = append(l.records, r)
	}
	if l.stopOnValue && len(l.records) > 0 {
		l.rounds = round
		l.done = true
		return nil
	}
	l.add(contacts, round+1)
	return l.Next(now)
}

// Fail records that from will not answer (unreachable, or its deadline
// passed) and returns the next RPCs to send.
func (l *Lookup) Fail(from proto.NodeID, now time.Time) []proto.DHTContact {
	i := l.index(from)
	if l.done || i < 0 || l.cands[i].state != candWaiting {
		return nil
	}
	l.cands[i].state = candFailed
	l.inflight--
	return l.Next(now)
}

// Tick fails the RPCs whose deadline has passed and returns the next RPCs.
func (l *Lookup) Tick(now time.Time) []proto.DHTContact {
	if l.done {
		return nil
	}
	expired := false
	for i := range l.cands {
		c := &l.cands[i]
		if c.state == candWaiting && !now.Before(c.deadline) {
			c.state = candFailed
			l.inflight--
			expired = true
		}
	}
	if !expired {
		return nil
	}
	return l.Next(now)
}

// Done reports whether the lookup has ended.
func (l *Lookup) Done() bool { return l.done }

// Closest returns up to K contacts that answered, closest first.
func (l *Lookup) Closest() []proto.DHTContact {
	var out []proto.DHTContact
	for _, c := range l.cands {
		if c.state == candAnswered {
			out = append(out, c.contact)
			if len(out) == l.k {
				break
			}
		}
	}
	return out
}

// Records returns the provider records found, one per ORDB.
func (l *Lookup) Records() []proto.ProviderRecord { return l.records }

// Rounds is the hop depth of the lookup: the round of the answer that
// carried the first records (StopOnValue), else the deepest round among
// the K closest that answered. The seeds are round 1.
func (l *Lookup) Rounds() int { return l.rounds }

// Msgs is the number of RPCs the lookup sent.
func (l *Lookup) Msgs() int { return l.msgs }
