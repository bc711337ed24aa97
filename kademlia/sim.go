package kademlia

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"veil/proto"
)

// SimConfig sets up a simulated network.
type SimConfig struct {
	// Nodes is the network size; node 0 is the bridge everyone joins by.
	Nodes int
	// Seed makes the run: the same seed and config give the same run,
	// message for message (see Sim.TraceHash).
	Seed uint64
	// Core is every node's DHT config.
	Core Config
	// LatencyMin and LatencyMax bound the one-way delay of a message,
	// drawn uniformly.
	LatencyMin, LatencyMax time.Duration
	// Loss is the probability that a message is lost.
	Loss float64
	// JoinSpacing is the virtual time between two nodes joining in Build.
	JoinSpacing time.Duration
	// Start is the virtual time the run starts at.
	Start time.Time
	// MaxEvents bounds any single Run call, so a bug cannot loop forever.
	MaxEvents int
	// Workers is how many goroutines run a window's events (see
	// Sim.window); the run is the same whatever the number.
	Workers int
}

// DefaultSimConfig returns a network of n nodes with 10-100 ms latency and
// no loss. The ID puzzle is off: solving it for every simulated node would
// cost seconds each thousand nodes, and IDs that solve it are spread over
// the keyspace exactly as random ones are.
func DefaultSimConfig(n int, seed uint64) SimConfig {
	core := DefaultConfig()
	core.IDWorkBits = 0
	return SimConfig{
		Nodes: n, Seed: seed, Core: core,
		LatencyMin: 10 * time.Millisecond, LatencyMax: 100 * time.Millisecond,
		JoinSpacing: 10 * time.Millisecond,
		Start:       time.Unix(1_800_000_000, 0),
		MaxEvents:   max(50_000_000, 1000*n), // a join costs ~450 messages at 100,000 nodes
		Workers:     min(runtime.GOMAXPROCS(0), 4),
	}
}

type simEventKind uint8

const (
	simDeliver simEventKind = iota
	simTick
	simJoin
)

type simEvent struct {
	kind     simEventKind
	to, from int32
	msg      proto.DHTMessage
}

// simItem orders the events: they wait in a slab (Sim.events) and only
// these small items move in the heap.
type simItem struct {
	at  int64 // virtual unix nanoseconds
	seq uint64
	idx int32 // into Sim.events
	to  int32 // the event's node
}

func (a simItem) before(b simItem) bool {
	return a.at < b.at || a.at == b.at && a.seq < b.seq
}

// simQueue is a binary min-heap of simItems.
type simQueue []simItem

func (q *simQueue) push(it simItem) {
	h := append(*q, it)
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !h[i].before(h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
	*q = h
}

func (q *simQueue) pop() simItem {
	h := *q
	top := h[0]
	n := len(h) - 1
	h[0] = h[n]
	h = h[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && h[r].before(h[l]) {
			m = r
		}
		if !h[m].before(h[i]) {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	*q = h
	return top
}

type simNode struct {
	core   *Core
	id     proto.NodeID
	alive  bool
	tickAt int64 // time of the earliest tick scheduled; 0 if none
}

type simKey struct {
	node int32
	op   OpID
}

// Sim is a whole DHT in one process: Cores driven through one event queue
// in virtual time, messages delayed, lost, or dropped at dead nodes
// (churn: nodes gone without notice). Node addresses are labels in the
// IPv6 documentation prefix 2001:db8::/32, one /48 per node; nothing is
// ever dialed. Not safe for concurrent use.
type Sim struct {
	cfg    SimConfig
	rng    *rand.Rand
	now    int64
	nodes  []simNode
	index  map[proto.NodeID]int32
	q      simQueue
	events []simEvent
	free   []int32
	seq    uint64
	trace  uint64 // digest of the messages (see record)
	// Build's joins: node i joins at joinBase + i JoinSpacing, for i <
	// joinEnd (one queued at a time).
	joinBase int64
	joinEnd  int32
	want     map[simKey]*Result
	coll     *colluders // nil: everyone honest

	workers     []*simWorker
	parallelMin int // fewest events of a window run by several workers
	parallel    int // windows run by several workers
	items       []simItem
	outs        []simOut
	keys        []uint64       // sort keys (byNode, byTime)
	sorted      []simItem      // byNode's result
	outsSorted  []simOut       // byTime's result
	bounds      []int32        // a window's chunks (start indexes)
	chunkOuts   []simChunkOuts // the outs of each chunk
	pools       []*contactPool // the workers' pools

	// Trace, if set, gets one line per message delivered or lost.
	Trace io.Writer
	// Sent, Delivered and Lost count messages.
	Sent, Delivered, Lost uint64
	// SentByType counts the messages sent by DHT RPC type.
	SentByType [proto.DHTFoundPeer + 1]uint64
}

// NewSim creates the nodes of cfg, none joined yet (see Build).
func NewSim(cfg SimConfig) (*Sim, error) {
	if cfg.Nodes < 1 || cfg.Nodes > 1<<20 {
		return nil, fmt.Errorf("%w: sim nodes %d", ErrBadConfig, cfg.Nodes)
	}
	if cfg.Workers < 0 || cfg.LatencyMin < 0 || cfg.LatencyMax < cfg.LatencyMin || cfg.Loss < 0 || cfg.Loss >= 1 || cfg.MaxEvents < 1 {
		return nil, fmt.Errorf("%w: sim latency/loss/events/workers", ErrBadConfig)
	}
	s := &Sim{
		cfg:   cfg,
		rng:   rand.New(rand.NewPCG(cfg.Seed, 0x5eed)),
		now:   cfg.Start.UnixNano(),
		nodes: make([]simNode, cfg.Nodes),
		index: make(map[proto.NodeID]int32, cfg.Nodes),
		trace: traceInit,
		want:  make(map[simKey]*Result),

		parallelMin: simParallelMin,
	}
	for range max(cfg.Workers, 1) {
		w := &simWorker{s: s}
		s.workers = append(s.workers, w)
		s.pools = append(s.pools, &w.pool)
	}
	// The keys are drawn in node order, then the nodes made by the
	// workers at once (an Ed25519 key costs tens of microseconds, seconds
	// at 100,000 nodes).
	seeds := make([][ed25519.SeedSize]byte, len(s.nodes))
	onions := make([]byte, len(s.nodes)*proto.OnionKeySize)
	for i := range s.nodes {
		for j := 0; j < ed25519.SeedSize; j += 8 {
			binary.LittleEndian.PutUint64(seeds[i][j:], s.rng.Uint64())
		}
		for j := 0; j < proto.OnionKeySize; j += 8 {
			binary.LittleEndian.PutUint64(onions[i*proto.OnionKeySize+j:], s.rng.Uint64())
		}
	}
	errs := make([]error, len(s.workers))
	var wg sync.WaitGroup
	for k := range s.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := k * len(s.nodes) / len(s.workers); i < (k+1)*len(s.nodes)/len(s.workers); i++ {
				key := ed25519.NewKeyFromSeed(seeds[i][:])
				id := Identity{
					ID:       proto.NodeIDFromKey(key.Public().(ed25519.PublicKey)),
					Addr:     simAddr(i),
					OnionKey: onions[i*proto.OnionKeySize : (i+1)*proto.OnionKeySize : (i+1)*proto.OnionKeySize],
					Key:      key,
				}
				c, err := NewCore(cfg.Core, id, rand.New(rand.NewPCG(cfg.Seed, uint64(i)+1)))
				if err != nil {
					errs[k] = err
					return
				}
				c.contacts = &s.workers[0].pool
				s.nodes[i] = simNode{core: c, id: id.ID, alive: true}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	for i := range s.nodes {
		s.index[s.nodes[i].id] = int32(i)
	}
	return s, nil
}

func simAddr(i int) netip.AddrPort {
	var a [16]byte
	a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
	// One /48 per node (up to 65,536 nodes), so the subnet limit of the
	// table does not bite in the simulation.
	binary.BigEndian.PutUint16(a[4:], uint16(i))
	binary.BigEndian.PutUint16(a[6:], uint16(i>>16))
	a[15] = 1
	return netip.AddrPortFrom(netip.AddrFrom16(a), 7700)
}

// Len is the number of nodes.
func (s *Sim) Len() int { return len(s.nodes) }

// Core returns node i's core.
func (s *Sim) Core(i int) *Core { return s.nodes[i].core }

// Alive reports whether node i is up.
func (s *Sim) Alive(i int) bool { return s.nodes[i].alive }

// Now is the virtual time.
func (s *Sim) Now() time.Time { return time.Unix(0, s.now) }

// TraceHash digests every message delivered or lost so far (time, ends,
// type, transaction ID): equal hashes mean equal runs.
func (s *Sim) TraceHash() uint64 { return s.trace }

const traceInit = 14695981039346656037

func (s *Sim) push(at int64, e simEvent) {
	*s.pushed(at, e.to) = e
}

// pushed queues an event at at and returns it to be filled in.
func (s *Sim) pushed(at int64, to int32) *simEvent {
	var idx int32
	if n := len(s.free); n > 0 {
		idx = s.free[n-1]
		s.free = s.free[:n-1]
	} else {
		idx = int32(len(s.events))
		s.events = append(s.events, simEvent{})
	}
	s.seq++
	s.q.push(simItem{at: at, seq: s.seq, idx: idx, to: to})
	return &s.events[idx]
}

// The simulator runs in windows of virtual time no longer than the
// shortest latency (a conservative parallel discrete-event simulation):
// whatever a window's events send arrives after the window, so the
// events of different nodes in one window cannot affect each other and
// run in parallel, one worker per range of nodes. A node's own events
// run in time order (a tick it schedules inside the window runs there
// too). What the events produce (messages, ticks, finished operations,
// trace lines) is then merged in an order fixed by the events alone -
// by time, then node, then the node's own order - and only then are
// latencies and losses drawn from the shared random source: a run is the
// same, message for message, whatever the number of workers.

// simOut is what one event of a window produced.
type simOut struct {
	at      int64
	node    int32
	deliver bool // a message was delivered: from, typ, txid trace it
	from    int32
	typ     proto.DHTType
	txid    uint64
	sends   []Send // what the core sent (a buffer of the worker's)
	d0      int32  // the sends' destinations are the worker's dests[d0:]
	r0, r1  int32  // results in the worker's results
	tickAt  int64  // a tick to schedule after the window; 0 if none
	k       int32  // order among the window's outs of one time
	w       *simWorker
}

// simWorker runs one range of nodes of a window.
type simWorker struct {
	s       *Sim
	pool    contactPool // answers' contact lists, recycled
	lend    []Send      // lent to the core an event runs (Core.lendSends)
	bufs    [][]Send    // free send buffers
	dests   []int32     // where the outs' sends go (-1: nowhere)
	results []Result
	outs    []simOut
	events  int
	sink    uintptr
}

// simChunkOuts are the outs a worker produced for one chunk of a window:
// w.outs[lo:hi].
type simChunkOuts struct {
	w      *simWorker
	lo, hi int32
}

// simChunk is about how many events a worker takes at once.
const simChunk = 32

// simParallelMin is the fewest events a window needs to be run by more
// than one worker (below it, starting them costs more than it saves).
const simParallelMin = 64

func (w *simWorker) reset() {
	for k := range w.outs {
		if b := w.outs[k].sends; b != nil {
			clear(b) // drop the messages' references
			w.bufs = append(w.bufs, b[:0])
		}
	}
	clear(w.outs)
	w.dests = w.dests[:0]
	clear(w.results)
	w.results = w.results[:0]
	w.outs = w.outs[:0]
	w.events = 0
}

// collect takes what node i's core produced at now into an out.
func (w *simWorker) collect(i int32, at int64, o simOut) simOut {
	c := w.s.nodes[i].core
	sends, results := c.Ready()
	o.at, o.node, o.w = at, i, w
	o.r0 = int32(len(w.results))
	w.results = append(w.results, results...)
	o.r1 = int32(len(w.results))
	if len(sends) == 0 {
		w.lend = sends
	} else {
		o.sends = sends
		o.d0 = int32(len(w.dests))
		for k := range sends {
			to, ok := w.s.lookupAddr(sends[k].To)
			if !ok {
				to = -1
			}
			w.dests = append(w.dests, to)
		}
		if n := len(w.bufs); n > 0 {
			w.lend = w.bufs[n-1]
			w.bufs = w.bufs[:n-1]
		}
	}
	return o
}

// run processes items (sorted by node, then time and sequence) of the
// window ending at end.
func (w *simWorker) run(items []simItem, end int64) {
	const ahead = 16
	next := 0
	for lo := 0; lo < len(items); {
		if lo >= next {
			next = min(lo+ahead, len(items))
			w.touch(items[lo:next])
		}
		node := items[lo].to
		hi := lo + 1
		for hi < len(items) && items[hi].to == node {
			hi++
		}
		w.runNode(node, items[lo:hi], end)
		lo = hi
	}
}

// touch loads, level by level, the memory the next events will need
// first (each event's node, its core, table, the sender's and the
// target's buckets, an answer's pending RPC and lookup): the cache
// misses of several events then overlap instead of coming one after
// another, the simulation's main cost at 100,000 nodes (every event
// lands in another node's memory). It only reads the nodes of the
// worker's own range (and the IDs of the senders, which never change).
func (w *simWorker) touch(items []simItem) {
	s := w.s
	var cores [16]*Core
	var froms [16]*simNode
	var x uintptr
	for k, it := range items {
		n := &s.nodes[it.to]
		cores[k] = n.core
		froms[k] = &s.nodes[s.events[it.idx].from]
	}
	var tables [16]*Table
	for k := range items {
		c := cores[k]
		x += uintptr(len(c.sends)) + uintptr(c.pending.len())
		tables[k] = &c.table
		x += uintptr(froms[k].id[0])
	}
	// The sender's bucket (Seen) and, for a lookup's request, the
	// target's (Closest) and, when that is one of the last few (the
	// sparse buckets near the node's own ID, where Closest goes on to
	// others), those around it.
	buckets := make([]*bucket, 0, 64)
	for k, it := range items {
		t := tables[k]
		x += uintptr(t.size)
		if p := proto.CommonPrefixLen(t.self, froms[k].id); p < len(t.buckets) && len(buckets) < cap(buckets) {
			buckets = append(buckets, &t.buckets[p])
		}
		if e := &s.events[it.idx]; e.kind == simDeliver && (e.msg.Type == proto.DHTFindNode || e.msg.Type == proto.DHTFindValue) {
			p := proto.CommonPrefixLen(t.self, e.msg.Target)
			if p < len(t.buckets) && len(buckets) < cap(buckets) {
				buckets = append(buckets, &t.buckets[p])
			}
			if p >= len(t.buckets)-3 {
				for q := max(p-1, 0); q < len(t.buckets) && q <= p+2 && len(buckets) < cap(buckets); q++ {
					if q != p {
						buckets = append(buckets, &t.buckets[q])
					}
				}
			}
		}
	}
	// An answer's pending RPC, its operation and the lookup's
	// candidates.
	var lookups [16]*Lookup
	for k, it := range items {
		if e := &s.events[it.idx]; e.kind == simDeliver && !e.msg.Type.IsRequest() {
			if i := cores[k].pending.find(e.msg.TxID); i >= 0 {
				if o := cores[k].ops.get(cores[k].pending.rpc[i].op); o != nil {
					lookups[k] = o.lookup
				}
			}
		}
	}
	for k, l := range lookups[:len(items)] {
		if l != nil && len(l.cands) > 0 {
			x += uintptr(l.cands[0].state) + uintptr(l.cands[len(l.cands)/2].state) + uintptr(l.cands[len(l.cands)-1].state)
			for j := 0; j < len(l.keys); j += 8 { // the keys search goes through
				x += uintptr(l.keys[j])
			}
			// The contacts the answer brings (each a line or so).
			for _, c := range s.events[items[k].idx].msg.Contacts {
				x += uintptr(c.ID[0])
			}
		}
	}
	// The buckets' headers first, then their slots: every slot, as a slot
	// (56 bytes) starts in each of the lines they span.
	var slots [64][]slot
	for k, b := range buckets {
		slots[k] = b.entries
	}
	for _, e := range slots[:len(buckets)] {
		for j := range e {
			x += uintptr(e[j].id[0])
		}
	}
	w.sink += x // keeps the loads from being optimised away
}

// runNode runs node i's events of the window, and the ticks it schedules
// inside the window, in time order (a tick after the events of its time,
// as it was scheduled after them).
func (w *simWorker) runNode(i int32, items []simItem, end int64) {
	s := w.s
	n := &s.nodes[i]
	if !n.alive {
		for _, it := range items {
			s.events[it.idx] = simEvent{} // drop the message's references
		}
		return
	}
	var local []int64 // ticks due inside the window, in order
	tick := simEvent{kind: simTick, to: i}
	for k := 0; k < len(items) || len(local) > 0; {
		var at int64
		e := &tick
		if k < len(items) && (len(local) == 0 || items[k].at <= local[0]) {
			at, e = items[k].at, &s.events[items[k].idx] // this worker's alone until the window is over
			k++
		} else {
			at = local[0]
			local = local[1:]
		}
		w.events++
		n.core.lendSends(w.lend)
		w.lend = nil
		n.core.contacts = &w.pool
		now := time.Unix(0, at)
		var o simOut
		switch e.kind {
		case simDeliver:
			o.deliver, o.from, o.typ, o.txid = true, e.from, e.msg.Type, e.msg.TxID
			if s.coll != nil && s.coll.is[i] {
				if e.msg.Type.IsRequest() {
					if reply, ok := s.collude(i, e.from, e.msg, at); ok {
						n.core.sends = append(n.core.sends, Send{To: s.nodes[e.from].core.Contact(), Msg: reply})
					}
				}
			} else {
				_ = n.core.handle(s.nodes[e.from].id, simAddr(int(e.from)).Addr(), &e.msg, now)
			}
			w.pool.put(e.msg.Contacts) // the core copied what it keeps
		case simTick:
			if n.tickAt == at {
				n.tickAt = 0
			}
			n.core.Tick(now)
		case simJoin:
			_, _ = n.core.Bootstrap([]proto.DHTContact{s.nodes[0].core.Contact()}, now)
		}
		o = w.collect(i, at, o)
		ticked := e.kind == simTick
		if e != &tick {
			*e = simEvent{} // done with: drop the message's references
		}
		if t := s.nextTick(i, at, o.sends, ticked); t != 0 {
			if t < end {
				j := len(local)
				for j > 0 && local[j-1] > t {
					j--
				}
				local = slices.Insert(local, j, t)
			} else {
				o.tickAt = t
			}
		}
		w.outs = append(w.outs, o)
	}
}

// nextTick is the tick node i needs after an event at at (0: none): a
// tick runs by its core's next deadline, and every request times out
// RPCTimeout after it is sent, so the first of a burst sets the next
// deadline (the tick schedules the rest).
func (s *Sim) nextTick(i int32, at int64, sends []Send, ticked bool) int64 {
	n := &s.nodes[i]
	if ticked && n.tickAt == 0 {
		if d := n.core.NextDeadline(); !d.IsZero() {
			n.tickAt = d.UnixNano()
			return n.tickAt
		}
	}
	if n.tickAt != 0 {
		return 0
	}
	for _, snd := range sends {
		if snd.Msg.Type.IsRequest() {
			n.tickAt = at + int64(s.cfg.Core.RPCTimeout)
			return n.tickAt
		}
	}
	return 0
}

// merge sends what the window's events produced, in the order of the
// events (time, node, the node's own order), and schedules the ticks.
func (s *Sim) merge(outs []simOut) {
	for _, o := range outs {
		s.now = o.at
		if o.deliver {
			s.Delivered++
			s.record("deliver", o.from, o.node, o.typ, o.txid)
		}
		for _, r := range o.w.results[o.r0:o.r1] {
			if p, ok := s.want[simKey{o.node, r.Op}]; ok {
				*p = r
				delete(s.want, simKey{o.node, r.Op})
			}
		}
		for k := range o.sends {
			s.send(o.node, &o.sends[k], o.w.dests[int(o.d0)+k])
		}
		if o.tickAt != 0 {
			s.push(o.tickAt, simEvent{kind: simTick, to: o.node})
		}
	}
}

// send schedules the delivery of one message of node i to node to (-1:
// no node has that address).
func (s *Sim) send(i int32, snd *Send, to int32) {
	s.Sent++
	if int(snd.Msg.Type) < len(s.SentByType) {
		s.SentByType[snd.Msg.Type]++
	}
	if to < 0 {
		return
	}
	if s.cfg.Loss > 0 && s.rng.Float64() < s.cfg.Loss {
		s.record("lost", i, to, snd.Msg.Type, snd.Msg.TxID)
		s.Lost++
		return
	}
	lat := s.cfg.LatencyMin
	if span := s.cfg.LatencyMax - s.cfg.LatencyMin; span > 0 {
		lat += time.Duration(s.rng.Int64N(int64(span)))
	}
	e := s.pushed(s.now+int64(lat), to)
	e.kind, e.to, e.from = simDeliver, to, i
	e.msg = snd.Msg
}

// flush sends what node i's core asked for outside any event (an
// operation just started).
func (s *Sim) flush(i int32) {
	w := s.workers[0]
	w.reset()
	s.nodes[i].core.lendSends(w.lend)
	w.lend = nil
	o := w.collect(i, s.now, simOut{})
	o.tickAt = s.nextTick(i, s.now, o.sends, false)
	w.outs = append(w.outs, o)
	s.merge(w.outs)
	w.reset()
}

// lookupAddr finds the node of contact c: the address label carries the
// node's index, checked against the ID (the map is the fallback). The
// workers call it at once: it only reads what never changes.
func (s *Sim) lookupAddr(c proto.DHTContact) (int32, bool) {
	if a := c.Addr.Addr(); a.Is6() {
		b := a.As16()
		i := int(binary.BigEndian.Uint16(b[4:])) | int(binary.BigEndian.Uint16(b[6:]))<<16
		if i < len(s.nodes) && s.nodes[i].id == c.ID {
			return int32(i), true
		}
	}
	i, ok := s.index[c.ID]
	return i, ok
}

func (s *Sim) record(what string, from, to int32, typ proto.DHTType, txid uint64) {
	// Three words, each mixed in by a multiply-xorshift round (cheaper
	// than a byte-wise hash: this runs for every message).
	for _, w := range [3]uint64{uint64(s.now), uint64(uint32(from))<<32 | uint64(uint32(to)), uint64(typ)<<56 ^ txid} {
		h := (s.trace ^ w) * 0x9e3779b97f4a7c15
		s.trace = h ^ h>>29
	}
	if s.Trace != nil {
		// No transaction IDs: they are random (seeded), and a golden trace
		// should change only where behaviour does.
		fmt.Fprintf(s.Trace, "%9.3fms %-7s %3d -> %3d %v\n", float64(s.now-s.cfg.Start.UnixNano())/1e6, what, from, to, typ)
	}
}

// byNode returns items (in time and sequence order, as popped) sorted by
// node, each node's in that order: a sort of one word per item (node,
// index), cheaper than sorting the items by three fields.
func (s *Sim) byNode(items []simItem) []simItem {
	keys := s.keys[:0]
	for i, it := range items {
		keys = append(keys, uint64(uint32(it.to))<<32|uint64(i))
	}
	slices.Sort(keys)
	out := s.sorted[:0]
	for _, k := range keys {
		out = append(out, items[uint32(k)])
	}
	s.keys = keys[:0]
	s.sorted = items[:0] // the two buffers take turns
	return out
}

// byTime returns outs (in node order) sorted by time, keeping the node
// order among equal times; as one word per out (time since from, index)
// when the window is short enough.
func (s *Sim) byTime(outs []simOut, from int64) []simOut {
	for k := range outs {
		outs[k].k = int32(k)
	}
	short := true
	for _, o := range outs {
		if d := o.at - from; d < 0 || d >= 1<<31 {
			short = false
			break
		}
	}
	if !short {
		slices.SortFunc(outs, func(a, b simOut) int {
			switch {
			case a.at < b.at:
				return -1
			case a.at > b.at:
				return 1
			}
			return int(a.k - b.k)
		})
		return outs
	}
	keys := s.keys[:0]
	for k, o := range outs {
		keys = append(keys, uint64(o.at-from)<<32|uint64(k))
	}
	slices.Sort(keys)
	sorted := s.outsSorted[:0]
	for _, k := range keys {
		sorted = append(sorted, outs[uint32(k)])
	}
	clear(outs)
	s.keys, s.outsSorted = keys[:0], outs[:0] // the two buffers take turns
	return sorted
}

// window runs the events of the next window, none later than limit (a
// unix nanosecond time), and returns how many ran; 0 if none is due.
func (s *Sim) window(limit int64) int {
	if len(s.q) == 0 || s.q[0].at > limit {
		return 0
	}
	end := s.q[0].at + max(int64(s.cfg.LatencyMin), 1)
	if limit < end {
		end = limit + 1
	}
	items := s.items[:0]
	start, last := s.q[0].at, s.q[0].at
	for len(s.q) > 0 && s.q[0].at < end {
		it := s.q.pop()
		last = it.at
		items = append(items, it)
		if e := &s.events[it.idx]; e.kind == simJoin && e.to+1 < s.joinEnd {
			s.push(s.joinBase+int64(e.to+1)*int64(s.cfg.JoinSpacing), simEvent{kind: simJoin, to: e.to + 1})
		}
	}
	items = s.byNode(items)
	nw := len(s.workers)
	if s.coll != nil || len(items) < s.parallelMin {
		nw = 1
	}
	for _, w := range s.workers[:nw] {
		w.reset()
	}
	outs := s.outs[:0]
	ran := 0
	if nw == 1 {
		w := s.workers[0]
		w.run(items, end)
		outs = append(outs, w.outs...)
		ran = w.events
	} else {
		s.parallel++
		// The window's nodes in chunks of about simChunk events, taken in
		// turn by whichever worker is free: the workers end together
		// however the events' costs are spread (a node that just joined
		// costs more than one that answers), and a worker that starts late
		// takes fewer chunks.
		bounds := s.bounds[:0]
		for lo := 0; lo < len(items); {
			bounds = append(bounds, int32(lo))
			hi := min(lo+simChunk, len(items))
			for hi < len(items) && items[hi].to == items[hi-1].to {
				hi++ // a node's events stay in one chunk
			}
			lo = hi
		}
		bounds = append(bounds, int32(len(items)))
		chunks := len(bounds) - 1
		if cap(s.chunkOuts) < chunks {
			s.chunkOuts = make([]simChunkOuts, chunks)
		}
		done := s.chunkOuts[:chunks]
		var next atomic.Int32
		work := func(w *simWorker) {
			for {
				c := int(next.Add(1)) - 1
				if c >= chunks {
					return
				}
				lo := len(w.outs)
				w.run(items[bounds[c]:bounds[c+1]], end)
				done[c] = simChunkOuts{w, int32(lo), int32(len(w.outs))}
			}
		}
		var wg sync.WaitGroup
		for _, w := range s.workers[:nw-1] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				work(w)
			}()
		}
		work(s.workers[nw-1])
		wg.Wait()
		// The chunks' outs, one after the other, are in node order.
		for _, d := range done {
			outs = append(outs, d.w.outs[d.lo:d.hi]...)
		}
		for _, w := range s.workers[:nw] {
			ran += w.events
		}
		clear(done)
		s.bounds = bounds[:0]
	}
	// outs are in node order, each node's in its own order: sort them by
	// time, k keeping that order among equal times.
	outs = s.byTime(outs, start)
	for _, it := range items {
		s.free = append(s.free, it.idx) // emptied by the workers
	}
	s.merge(outs)
	s.now = max(last, s.now)
	if nw > 1 {
		balance(s.pools)
	}
	clear(outs)
	s.outs, s.items = outs[:0], items[:0]
	for _, w := range s.workers[:nw] {
		w.reset()
	}
	return max(ran, 1)
}

// RunIdle runs events until none is left.
func (s *Sim) RunIdle() error {
	for n := 0; n < s.cfg.MaxEvents; {
		ran := s.window(math.MaxInt64)
		if ran == 0 {
			return nil
		}
		n += ran
	}
	return fmt.Errorf("kademlia: sim: still busy after %d events", s.cfg.MaxEvents)
}

// Build joins nodes 1..n-1 through node 0, one every JoinSpacing, and runs
// until the network is quiet.
func (s *Sim) Build() error {
	// One join waits in the queue at a time, each queuing the next when
	// it runs (Sim.window): a queue of 100,000 joins made every pop and
	// push of the build go 17 levels deep instead of ~12.
	s.joinBase, s.joinEnd = s.now, int32(len(s.nodes))
	if len(s.nodes) > 1 {
		s.push(s.now+int64(s.cfg.JoinSpacing), simEvent{kind: simJoin, to: 1})
	}
	return s.RunIdle()
}

// Kill takes the fraction frac of the nodes down without notice (their
// messages are dropped from now on) and returns their indexes.
func (s *Sim) Kill(frac float64) []int {
	perm := s.rng.Perm(len(s.nodes))
	n := int(frac * float64(len(s.nodes)))
	for _, i := range perm[:n] {
		s.nodes[i].alive = false
	}
	return perm[:n]
}

// SetAlive takes node i down (without notice) or back up.
func (s *Sim) SetAlive(i int, up bool) { s.nodes[i].alive = up }

// RandomAlive returns a random node that is up.
func (s *Sim) RandomAlive() int {
	for {
		if i := s.rng.IntN(len(s.nodes)); s.nodes[i].alive {
			return i
		}
	}
}

// Rand is the simulation's random source (seeded by SimConfig.Seed).
func (s *Sim) Rand() *rand.Rand { return s.rng }

// await runs events until node i's operation op finishes.
func (s *Sim) await(i int, op OpID, err error) (Result, error) {
	if err != nil {
		return Result{}, err
	}
	var r Result
	k := simKey{int32(i), op}
	s.want[k] = &r
	s.flush(int32(i))
	for n := 0; n < s.cfg.MaxEvents; {
		if _, waiting := s.want[k]; !waiting {
			return r, nil
		}
		ran := s.window(math.MaxInt64)
		if ran == 0 {
			break
		}
		n += ran
	}
	if _, waiting := s.want[k]; !waiting {
		return r, nil
	}
	delete(s.want, k)
	return Result{}, fmt.Errorf("%w: sim node %d op %d", ErrLookupTimeout, i, op)
}

// FindValue runs a FIND_VALUE of key from node i to its end.
func (s *Sim) FindValue(i int, key proto.HashName) (Result, error) {
	op, err := s.nodes[i].core.FindValue(key, s.Now())
	return s.await(i, op, err)
}

// FindNode runs a FIND_NODE of target from node i to its end.
func (s *Sim) FindNode(i int, target proto.NodeID) (Result, error) {
	op, err := s.nodes[i].core.FindNode(target, s.Now())
	return s.await(i, op, err)
}

// Provide runs node i's Provide of key to its end.
func (s *Sim) Provide(i int, key proto.HashName) (Result, error) {
	op, err := s.nodes[i].core.Provide(key, proto.MaxPieces, false, s.Now())
	return s.await(i, op, err)
}

// Advance runs the network for d of virtual time (ticking every node
// once at the end so periodic work - refresh, republish, expiry - runs).
func (s *Sim) Advance(d time.Duration) error {
	end := s.now + int64(d)
	for n := 0; n < s.cfg.MaxEvents; {
		ran := s.window(end)
		if ran == 0 {
			break
		}
		n += ran
	}
	s.now = end
	for i := range s.nodes {
		if s.nodes[i].alive {
			s.nodes[i].core.Tick(s.Now())
			s.flush(int32(i))
		}
	}
	return nil
}
