package kademlia

import (
	"bytes"
	"encoding/binary"
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
	round    int32 // 1 for the seeds, parent's round + 1 for contacts learned
	paths    uint8 // bit p: path p knows the contact
	path     uint8 // the path that asked it (state not candNew)
	deadline int64 // unix nanoseconds (a time.Time is three times larger)
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
//
// It follows Paths disjoint paths (S/Kademlia): the seeds are dealt out
// among the paths closest first, a contact learned from an answer becomes
// known to the path of the node that named it, and a contact is asked by
// the first path that wants it and then ignored by the others. Each path keeps Alpha RPCs in
// flight to its closest contacts not yet asked and ends when its own K
// closest, failures aside, have all answered; the lookup ends when every
// path has (or, for FIND_VALUE with StopOnValue, at the first records).
// Colluders that name only each other capture the paths that reach them
// and no other. Contacts whose ID does not solve the ID puzzle
// (IDWorkBits) are never asked. Not safe for concurrent use.
type Lookup struct {
	self, target proto.NodeID
	kind         LookupKind
	k, alpha     int
	maxCands     int
	timeout      time.Duration
	stopOnValue  bool
	paths        int
	work         int

	// cands is sorted by distance to target. A contact once added is
	// never added again: it stays in cands, or it was dropped for being
	// beyond the MaxCandidates closest, where it can never come back as
	// cands only gains closer contacts.
	cands []candidate
	// keys[i] is the first 8 bytes of cands[i].dist as a number: search
	// compares these first, a few cache lines instead of one per probe.
	keys     []uint64
	inflight [8]int             // per path (at most 8)
	out      []proto.DHTContact // what Next returns, reused
	// fill > 0 ends the lookup once K contacts sharing the target's first
	// fill bits have answered (a bucket refresh: see Core.refresh);
	// filled counts them.
	fill, filled, need int
	records            []proto.ProviderRecord
	done               bool
	rounds             int
	msgs               int
}

// NewLookup starts a lookup of target for node self from seeds (usually
// the table's closest contacts). Call Next to get the first RPCs.
func NewLookup(self, target proto.NodeID, kind LookupKind, seeds []proto.DHTContact, cfg Config) *Lookup {
	return newLookup(self, target, kind, seeds, cfg, candBuf{})
}

// candBuf is the memory of a lookup's candidates, recycled by the
// simulator (contactPool).
type candBuf struct {
	cands []candidate
	keys  []uint64
}

// newLookup is NewLookup keeping its candidates in buf (empty; nil:
// allocated).
func newLookup(self, target proto.NodeID, kind LookupKind, seeds []proto.DHTContact, cfg Config, buf candBuf) *Lookup {
	cands, keys := buf.cands, buf.keys
	if cands == nil {
		cands = make([]candidate, 0, 4*cfg.K)
	}
	if keys == nil {
		keys = make([]uint64, 0, 4*cfg.K)
	}
	l := &Lookup{
		self: self, target: target, kind: kind,
		k: cfg.K, alpha: cfg.Alpha, maxCands: cfg.MaxCandidates,
		timeout: cfg.RPCTimeout, stopOnValue: cfg.StopOnValue,
		paths: min(max(cfg.Paths, 1), 8), work: cfg.IDWorkBits,
		cands: cands, keys: keys,
	}
	if kind == FindValue {
		l.alpha = cfg.AlphaFindValue
	}
	// Deal the seeds out closest first: path p gets the p-th, the
	// (p+Paths)-th, ... closest of them.
	seeds = slices.Clone(seeds)
	slices.SortFunc(seeds, func(a, b proto.DHTContact) int {
		da, db := proto.Xor(a.ID, target), proto.Xor(b.ID, target)
		return bytes.Compare(da[:], db[:])
	})
	n := 0
	for _, s := range seeds {
		if l.add1(s, 1, uint8(n%l.paths)) {
			n++
		}
	}
	return l
}

// EndWhenFilled makes the lookup end as soon as K contacts that share
// the target's first bits bits have answered, instead of when its K
// closest have: what a bucket refresh needs (the bucket's range is the
// IDs sharing a prefix with the random target), at a fraction of the
// RPCs of a full lookup. Call it before Next.
func (l *Lookup) EndWhenFilled(bits, need int) { l.fill, l.need = bits, need }

// Target is the ID looked up.
func (l *Lookup) Target() proto.NodeID { return l.target }

// Kind is what the lookup asks for.
func (l *Lookup) Kind() LookupKind { return l.kind }

// search returns where id is or would be in cands.
func (l *Lookup) search(id proto.NodeID) (int, bool) {
	d := proto.Xor(id, l.target)
	d0 := binary.BigEndian.Uint64(d[:8])
	// By hand rather than slices.BinarySearch: this is the lookup's hot
	// path.
	keys := l.keys
	lo, hi := 0, len(keys)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if keys[m] < d0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	// Distances sharing their first 8 bytes: the whole of them decides.
	for ; lo < len(keys) && keys[lo] == d0; lo++ {
		switch cmpID(&l.cands[lo].dist, &d) {
		case 0:
			return lo, true
		case 1:
			return lo, false
		}
	}
	return lo, false
}

func (l *Lookup) index(id proto.NodeID) int {
	if i, found := l.search(id); found {
		return i
	}
	return -1
}

func (l *Lookup) add(cs []proto.DHTContact, round int32, path uint8) {
	for _, c := range cs {
		l.add1(c, round, path)
	}
}

// add1 adds c to path's candidates; false if c was known, unusable or
// too far.
func (l *Lookup) add1(c proto.DHTContact, round int32, path uint8) bool {
	if c.ID == l.self || c.ID.IsZero() || !c.Addr.IsValid() || !proto.IDWorkOK(c.ID, l.work) {
		return false
	}
	i, dup := l.search(c.ID)
	if dup {
		l.cands[i].paths |= 1 << path
		return false
	}
	if i >= l.maxCands {
		return false // farther than everything kept
	}
	d := proto.Xor(c.ID, l.target)
	l.cands = slices.Insert(l.cands, i, candidate{dist: d, contact: c, round: round, paths: 1 << path})
	l.keys = slices.Insert(l.keys, i, binary.BigEndian.Uint64(d[:8]))
	if len(l.cands) > l.maxCands {
		// Drop the farthest candidate not in flight.
		for j := len(l.cands) - 1; j >= 0; j-- {
			if l.cands[j].state != candWaiting {
				l.cands = slices.Delete(l.cands, j, j+1)
				l.keys = slices.Delete(l.keys, j, j+1)
				break
			}
		}
	}
	return true
}

// Next returns the contacts to query now (each marked in flight until
// Answer, Fail or its deadline), and updates Done. The slice is valid
// until the next call of Next, Answer, Fail or Tick. The query goes out as
// FIND_NODE or FIND_VALUE for Target per Kind.
func (l *Lookup) Next(now time.Time) []proto.DHTContact {
	if l.done {
		return nil
	}
	out := l.out[:0]
	pending := false
	alpha := l.alpha
	if l.fill > 0 {
		// A refresh keeps no more RPCs in flight than answers it still
		// lacks: the ones beyond would be sent for nothing.
		alpha = max(min(alpha, l.need-l.filled), 1)
	}
	for p := range l.paths {
		seen := 0
		for i := range l.cands {
			c := &l.cands[i]
			if c.state == candFailed || c.paths&(1<<p) == 0 || c.state != candNew && int(c.path) != p {
				continue // failed, unknown to p, or p's to ask no more
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
				if l.inflight[p] < alpha {
					c.state, c.deadline, c.path = candWaiting, now.Add(l.timeout).UnixNano(), uint8(p)
					l.inflight[p]++
					l.msgs++
					out = append(out, c.contact)
				}
			}
		}
	}
	if !pending {
		l.finish()
	}
	l.out = out
	if len(out) == 0 {
		return nil
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
				l.rounds = max(l.rounds, int(c.round))
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
	l.inflight[l.cands[i].path]--
	round, path := l.cands[i].round, l.cands[i].path
	if l.fill > 0 && proto.CommonPrefixLen(from, l.target) >= l.fill {
		if l.filled++; l.filled >= l.need {
			l.finish()
			return nil
		}
	}
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
		l.rounds = int(round)
		l.done = true
		return nil
	}
	l.add(contacts, round+1, path)
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
	l.inflight[l.cands[i].path]--
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
		if c.state == candWaiting && now.UnixNano() >= c.deadline {
			c.state = candFailed
			l.inflight[c.path]--
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
