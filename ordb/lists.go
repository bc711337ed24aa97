package ordb

import (
	"container/list"
	"slices"
	"time"

	"veil/proto"
)

// refKind says what sits at the far end of a reference's circuit, which
// decides the DB_QUERY counter when a query is forwarded there.
type refKind uint8

const (
	// holderRef: a peer that advertised with DB_INFO (or a stream
	// advertisement) that it holds the content. It answers from its own
	// store and relays nothing, so the counter is kept.
	holderRef refKind = iota
	// relayRef: another ORDB, which told us it knows the content or which
	// the DHT named as a provider. It may relay further, so the counter
	// goes up by one, as the Peersm specification does for an ORDB found
	// in the DHT; that bounds a loop between ORDBs even after the relayed
	// request IDs have expired.
	relayRef
)

// ref is one entry of a hash_name's OR_files_P or OR_streams_P list.
type ref struct {
	circ        CircuitID
	kind        refKind
	size        uint64 // as advertised (informational; never trusted for decisions)
	typ         string
	p           uint8 // DB_INFO P: 0..3 = 25..100 %
	facilitator bool
	// first, last bound the chunk indexes a stream reference holds; a
	// relay reference to a stream covers every index (its holders are
	// unknown to us).
	first, last uint64
	strikes     uint8
}

func (r *ref) covers(chunk uint64) bool { return r.first <= chunk && chunk <= r.last }

// names is the ORDB's reference lists: for each hash_name, one nameEntry
// holding OR_files_P (files) and OR_streams_P (streams). Requests share
// these objects (they find them by hash_name each time, never copy them).
// Sizes are bounded: at most maxNames names (least recently touched
// evicted), maxRefs entries per list, one entry per circuit per list, and
// at most maxPerCirc names referenced by one circuit, so one peer cannot
// fill the lists.
type names struct {
	maxNames, maxRefs, maxPerCirc, maxStrikes int

	m      map[proto.HashName]*nameEntry
	lru    *list.List // of *nameEntry, least recently touched at the front
	perCir map[CircuitID]int
}

// nameEntry is everything an ORDB knows of one hash_name.
type nameEntry struct {
	name    proto.HashName
	files   []*ref // OR_files_P[name]: rotated, the reference used goes to the end
	streams []*ref // OR_streams_P[name]: entries cover chunk index ranges
	elem    *list.Element

	maxP uint8 // highest P a holder advertised (for STORE)

	// From a descriptor relayed through this ORDB that hashed to name and
	// whose signature verified: only these are trusted for decisions.
	verified bool
	size     uint64
	typ      string
	live     bool
}

func newNames(cfg Config) *names {
	return &names{
		maxNames: cfg.MaxNames, maxRefs: cfg.MaxRefsPerName,
		maxPerCirc: cfg.MaxNamesPerCircuit, maxStrikes: cfg.MaxStrikes,
		m: make(map[proto.HashName]*nameEntry), lru: list.New(),
		perCir: make(map[CircuitID]int),
	}
}

func (ns *names) get(h proto.HashName) *nameEntry { return ns.m[h] }

func (ns *names) touch(e *nameEntry) { ns.lru.MoveToBack(e.elem) }

// add puts r in h's files or streams list, or updates the entry circuit
// r.circ already has there. It reports whether the name is new and
// whether the entry is new; added is false (and nothing changed) when the
// circuit already references too many names or the list is full of
// healthy entries.
func (ns *names) add(h proto.HashName, r *ref, stream bool, alive func(CircuitID) bool) (e *nameEntry, newName, added bool) {
	e = ns.m[h]
	if e == nil {
		if ns.perCir[r.circ] >= ns.maxPerCirc {
			return nil, false, false
		}
		if len(ns.m) >= ns.maxNames {
			ns.evictOldest()
		}
		e = &nameEntry{name: h}
		e.elem = ns.lru.PushBack(e)
		ns.m[h] = e
		newName = true
	}
	ns.touch(e)
	l := &e.files
	if stream {
		l = &e.streams
	}
	if i := slices.IndexFunc(*l, func(x *ref) bool { return x.circ == r.circ }); i >= 0 {
		old := (*l)[i]
		// Same circuit, same name: refresh what it says, keep its place
		// in the rotation and its strikes.
		old.kind, old.size, old.typ, old.p, old.facilitator = r.kind, r.size, r.typ, r.p, r.facilitator
		old.first, old.last = r.first, r.last
		return e, newName, false
	}
	if !ns.refersTo(e, r.circ) && ns.perCir[r.circ] >= ns.maxPerCirc {
		return e, newName, false
	}
	if len(*l) >= ns.maxRefs {
		ns.prune(e, l, alive)
		if len(*l) >= ns.maxRefs {
			return e, newName, false
		}
	}
	if !ns.refersTo(e, r.circ) {
		ns.perCir[r.circ]++
	}
	*l = append(*l, r)
	return e, newName, true
}

// refersTo reports whether circuit c has an entry in either list of e.
func (ns *names) refersTo(e *nameEntry, c CircuitID) bool {
	has := func(x *ref) bool { return x.circ == c }
	return slices.ContainsFunc(e.files, has) || slices.ContainsFunc(e.streams, has)
}

// prune makes room in a full list: entries on closed circuits go first,
// then the entry with the most strikes. Healthy entries are never pushed
// out by newcomers, so a flood of DB_INFO cannot evict working references.
func (ns *names) prune(e *nameEntry, l *[]*ref, alive func(CircuitID) bool) {
	for i := 0; i < len(*l); {
		if !alive((*l)[i].circ) {
			ns.removeAt(e, l, i)
			continue
		}
		i++
	}
	if len(*l) < ns.maxRefs {
		return
	}
	worst := -1
	for i, x := range *l {
		if x.strikes > 0 && (worst < 0 || x.strikes > (*l)[worst].strikes) {
			worst = i
		}
	}
	if worst >= 0 {
		ns.removeAt(e, l, worst)
	}
}

// removeAt deletes entry i of list l of e, keeping the per-circuit count.
func (ns *names) removeAt(e *nameEntry, l *[]*ref, i int) {
	c := (*l)[i].circ
	*l = slices.Delete(*l, i, i+1)
	if !ns.refersTo(e, c) {
		if n, ok := ns.perCir[c]; ok {
			if n <= 1 {
				delete(ns.perCir, c)
			} else {
				ns.perCir[c] = n - 1
			}
		}
	}
}

// remove deletes r from e's lists if it is still there.
func (ns *names) remove(e *nameEntry, r *ref) {
	for _, l := range []*[]*ref{&e.files, &e.streams} {
		if i := slices.Index(*l, r); i >= 0 {
			ns.removeAt(e, l, i)
			return
		}
	}
}

// strike counts a failure of r (a holder that could not serve what it
// advertised, a relay that broke); at maxStrikes the entry goes.
func (ns *names) strike(e *nameEntry, r *ref) {
	r.strikes++
	if int(r.strikes) >= ns.maxStrikes {
		ns.remove(e, r)
	}
}

// pick is the Peersm specification's choice: the first entry of l whose
// circuit is valid and that ok accepts is moved to the end of the list
// and returned. Entries on closed circuits met on the way are dropped then,
// not when the circuit closed: the lists are not maintained when circuits
// break, a broken reference is skipped when it is chosen.
func (ns *names) pick(e *nameEntry, l *[]*ref, alive func(CircuitID) bool, ok func(*ref) bool) *ref {
	for i := 0; i < len(*l); {
		r := (*l)[i]
		if !alive(r.circ) {
			ns.removeAt(e, l, i)
			continue
		}
		if ok(r) {
			*l = append(slices.Delete(*l, i, i+1), r)
			ns.touch(e)
			return r
		}
		i++
	}
	return nil
}

// circuitClosed forgets the per-circuit count of c; its entries stay in
// the lists until they are met (pick, prune).
func (ns *names) circuitClosed(c CircuitID) { delete(ns.perCir, c) }

func (ns *names) evictOldest() {
	front := ns.lru.Front()
	if front == nil {
		return
	}
	e := front.Value.(*nameEntry)
	for _, l := range []*[]*ref{&e.files, &e.streams} {
		for len(*l) > 0 {
			ns.removeAt(e, l, len(*l)-1)
		}
	}
	ns.lru.Remove(front)
	delete(ns.m, e.name)
}

// liveStart is where a requester joining the live stream e should start:
// the index M of the Peersm specification, the number of chunks known
// minus twice the window, not before the oldest chunk a valid reference
// holds. ok is false when no valid stream reference exists.
func (e *nameEntry) liveStart(window uint64, alive func(CircuitID) bool) (start uint64, ok bool) {
	var lo, hi uint64
	for _, r := range e.streams {
		if !alive(r.circ) || r.kind != holderRef {
			continue
		}
		if !ok || r.first < lo {
			lo = r.first
		}
		if !ok || r.last > hi {
			hi = r.last
		}
		ok = true
	}
	if !ok {
		return 0, false // only relays know the stream: they find the start
	}
	count := hi + 1
	if count > 2*window {
		start = count - 2*window
	}
	return max(start, lo), true
}

// idSet is the set of request IDs this ORDB has relayed: bounded (the
// oldest goes first when full) and expiring (time is an input).
type idSet struct {
	max   int
	ttl   time.Duration
	until map[uint64]time.Time
	fifo  []idAt // insertion order; head is fifo[0]
}

type idAt struct {
	id    uint64
	until time.Time
}

func newIDSet(max int, ttl time.Duration) *idSet {
	return &idSet{max: max, ttl: ttl, until: make(map[uint64]time.Time)}
}

func (s *idSet) has(id uint64, now time.Time) bool {
	u, ok := s.until[id]
	return ok && now.Before(u)
}

func (s *idSet) add(id uint64, now time.Time) {
	for len(s.until) >= s.max && len(s.fifo) > 0 {
		s.popFront()
	}
	u := now.Add(s.ttl)
	s.until[id] = u
	s.fifo = append(s.fifo, idAt{id, u})
}

func (s *idSet) popFront() {
	f := s.fifo[0]
	s.fifo = s.fifo[1:]
	if u, ok := s.until[f.id]; ok && u.Equal(f.until) {
		delete(s.until, f.id)
	}
	if cap(s.fifo) > 64 && len(s.fifo) < cap(s.fifo)/4 {
		s.fifo = slices.Clone(s.fifo)
	}
}

// expire drops the IDs whose time is over. Entries are in insertion
// order, which is expiry order as long as now does not go backwards; if it
// does, an entry lives at most until the ones before it expire.
func (s *idSet) expire(now time.Time) {
	for len(s.fifo) > 0 && !now.Before(s.fifo[0].until) {
		s.popFront()
	}
}

func (s *idSet) len() int { return len(s.until) }

// knownSet is what one neighbour ORDB knows: the hash_names we told it
// about or it told us about. Bounded; forgetting a name only means it may
// be told again.
type knownSet struct {
	max  int
	set  map[proto.HashName]struct{}
	fifo []proto.HashName
}

func (k *knownSet) has(h proto.HashName) bool { _, ok := k.set[h]; return ok }

func (k *knownSet) add(h proto.HashName) {
	if k.set == nil {
		k.set = make(map[proto.HashName]struct{})
	}
	if k.has(h) {
		return
	}
	for len(k.set) >= k.max && len(k.fifo) > 0 {
		delete(k.set, k.fifo[0])
		k.fifo = k.fifo[1:]
	}
	k.set[h] = struct{}{}
	k.fifo = append(k.fifo, h)
	if cap(k.fifo) > 64 && len(k.fifo) < cap(k.fifo)/4 {
		k.fifo = slices.Clone(k.fifo)
	}
}
