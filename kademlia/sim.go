package kademlia

import (
	"cmp"
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/bits"
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

// simEvent is a message to deliver, a tick or a join, at a virtual time.
// Events are ordered by (at, from, cnt): time, then who made the event
// (the sender; the node itself for a tick; -1 for Build's joins), then
// how many events that node had made before. The order depends on the
// events alone, not on which worker made or runs them.
//
// A message keeps only what the wire carries for its type: PING, PONG,
// FIND_NODE, FIND_VALUE and NODES (nearly all of a simulation's
// messages) in the event itself, any other in full on the heap. A whole
// proto.DHTMessage is 560 bytes, and every event is written once and
// read once from memory no cache holds any more.
type simEvent struct {
	at       int64 // virtual unix nanoseconds
	from     int32
	to       int32
	cnt      uint32
	kind     simEventKind
	typ      proto.DHTType
	txid     uint64
	target   proto.NodeID
	sender   netip.AddrPort
	contacts []proto.DHTContact
	full     *proto.DHTMessage // the other types
}

// message returns the event's message.
func (e *simEvent) message() proto.DHTMessage {
	if e.full != nil {
		return *e.full
	}
	return proto.DHTMessage{Type: e.typ, TxID: e.txid, Sender: e.sender, Target: e.target, Contacts: e.contacts}
}

func (a *simEvent) before(b *simEvent) bool {
	if a.at != b.at {
		return a.at < b.at
	}
	if a.from != b.from {
		return a.from < b.from
	}
	return a.cnt < b.cnt
}

// simItem is an event waiting beyond the calendar (Sim.far): only these
// small items move in the heap.
type simItem struct {
	at   int64
	from int32
	cnt  uint32
	idx  int32 // into Sim.farEvents
}

func (a simItem) before(b simItem) bool {
	if a.at != b.at {
		return a.at < b.at
	}
	if a.from != b.from {
		return a.from < b.from
	}
	return a.cnt < b.cnt
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
	cnt    uint32   // events this node made (simEvent.cnt)
	tickAt int64    // time of the earliest tick scheduled; 0 if none
	rng    rand.PCG // the latencies and losses of its messages
}

// lossDraw and latencyDraw draw from node n's own source, so a message's
// fate depends on its sender's history alone, whatever worker sends it.
func (n *simNode) lossDraw() float64 { return float64(n.rng.Uint64()>>11) / (1 << 53) }

func (n *simNode) latencyDraw(span int64) int64 {
	hi, _ := bits.Mul64(n.rng.Uint64(), uint64(span))
	return int64(hi)
}

type simKey struct {
	node int32
	op   OpID
}

// The simulator runs in windows of virtual time as long as the shortest
// latency, aligned on multiples of it (a conservative parallel
// discrete-event simulation): whatever a window's events send arrives in
// a later window, so the events of different nodes in one window cannot
// affect each other and run in parallel. A node's own events run in
// order (a tick it schedules inside the window runs there too).
//
// The events wait in a calendar of simRing windows, each cut into
// simGroups groups of nodes (node i in group i mod simGroups) and each
// group into one list per worker that made the events: a worker appends
// to its own lists only, and during a window the workers take whole
// groups, so nothing is shared but a counter. Events beyond the calendar
// wait in a heap (far), moved in as the calendar turns. Every message's
// latency and loss come from its sender's own random source, and events
// are ordered by (time, maker, maker's count), so a run is the same,
// message for message, whatever the number of workers.

// simRing is how many windows the calendar holds (a power of two).
const simRing = 256

// simGroups is how many groups of nodes a window is cut into (a power
// of two): enough for the workers to end a window together.
const simGroups = 16

// simBucket is one window of the calendar: lists[group*workers+maker].
type simBucket struct {
	lists [][]simEvent
}

// simResult is an operation's result on node.
type simResult struct {
	node int32
	r    Result
}

// simLine is a message delivered or lost, for Sim.Trace.
type simLine struct {
	at       int64
	lost     bool
	from, to int32
	typ      proto.DHTType
}

// simWorker runs groups of a window's nodes.
type simWorker struct {
	s      *Sim
	idx    int
	pool   contactPool // answers' contact lists, recycled
	lend   []Send      // lent to the core an event runs (Core.lendSends)
	counts [simRing]int32
	far    []simEvent // made beyond the calendar (or in the current window)
	refs   []*simEvent
	keys   []uint64
	run    []*simEvent // one node's events
	local  []int64     // one node's ticks due inside the window

	// What the window did, gathered by the Sim after it.
	events                int
	sent, delivered, lost uint64
	sentByType            [proto.DHTFoundPeer + 1]uint64
	trace                 uint64
	last                  int64 // the latest event time run
	results               []simResult
	lines                 []simLine
	sink                  uintptr

	wake     chan struct{}
	sleeping atomic.Bool
	_        [64]byte // keeps the next worker's hot fields off this line
}

// simParallelMin is the fewest events a window needs to be run by more
// than one worker (below it, waking them costs more than it saves).
const simParallelMin = 64

// simSpin is how long an idle worker (or the Sim waiting for its
// workers) spins before it sleeps: waking a sleeping thread costs a
// virtual machine 0.1-0.2 ms, more than the gap between two windows.
const simSpin = 200 * time.Microsecond

// Sim is a whole DHT in one process: Cores driven by events in virtual
// time, messages delayed, lost, or dropped at dead nodes (churn: nodes
// gone without notice). Node addresses are labels in the IPv6
// documentation prefix 2001:db8::/32, one /48 per node; nothing is ever
// dialed. Not safe for concurrent use.
type Sim struct {
	cfg   SimConfig
	rng   *rand.Rand
	now   int64
	nodes []simNode
	index map[proto.NodeID]int32
	trace uint64 // digest of the messages (see record)

	// The calendar: window k is [base + k width, base + (k+1) width).
	base, width int64
	cur         int64 // the window running, or the last one run
	ring        [simRing]simBucket
	far         simQueue // events beyond the calendar
	farEvents   []simEvent
	farFree     []int32

	// Build's joins: node j joins at joinBase + j JoinSpacing, for
	// joinNext <= j < joinEnd (each put in the calendar when its window
	// comes).
	joinBase          int64
	joinNext, joinEnd int32
	want              map[simKey]*Result
	coll              *colluders // nil: everyone honest

	workers     []*simWorker
	pools       []*contactPool // the workers' pools
	parallelMin int            // fewest events of a window run by several workers
	parallel    int            // windows run by several workers
	lines       []simLine

	// The running window, and the workers' rendezvous (see work).
	bucket       *simBucket
	end          int64
	order        [simGroups]int8 // the groups in the order the workers take them
	started      bool
	gen          atomic.Uint32 // bumped to start a window (or to stop)
	quit         atomic.Bool
	nextGroup    atomic.Int32
	pending      atomic.Int32 // helper workers still in the window
	mainSleeping atomic.Bool
	done         chan struct{}
	helpers      sync.WaitGroup

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
		base:  cfg.Start.UnixNano(),
		width: max(int64(cfg.LatencyMin), 1),
		done:  make(chan struct{}, 1),

		parallelMin: simParallelMin,
	}
	for k := range max(cfg.Workers, 1) {
		w := &simWorker{s: s, idx: k, wake: make(chan struct{}, 1)}
		s.workers = append(s.workers, w)
		s.pools = append(s.pools, &w.pool)
	}
	for b := range s.ring {
		s.ring[b].lists = make([][]simEvent, simGroups*len(s.workers))
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
				s.nodes[i] = simNode{core: c, id: id.ID, alive: true, rng: *rand.NewPCG(cfg.Seed, uint64(i)|1<<40)}
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

// winOf is the window of time at.
func (s *Sim) winOf(at int64) int64 { return (at - s.base) / s.width }

// count is how many events wait in window k of the calendar.
func (s *Sim) count(k int64) int {
	n := 0
	for _, w := range s.workers {
		n += int(w.counts[k&(simRing-1)])
	}
	return n
}

// grow appends an event to l and returns it, to be filled in whole.
func grow(l *[]simEvent) *simEvent {
	if n := len(*l); n < cap(*l) {
		*l = (*l)[:n+1]
	} else {
		*l = append(*l, simEvent{})
	}
	return &(*l)[len(*l)-1]
}

// slot returns a new event of w's for node to at at, to be filled in
// whole: in the calendar, or beyond it (far) if it is too late for the
// calendar or in the running window itself (a tick after a window cut
// short by a limit).
func (w *simWorker) slot(at int64, to int32) *simEvent {
	s := w.s
	k := s.winOf(at)
	if k <= s.cur || k >= s.cur+simRing {
		return grow(&w.far)
	}
	b := k & (simRing - 1)
	w.counts[b]++
	return grow(&s.ring[b].lists[int(to)&(simGroups-1)*len(s.workers)+w.idx])
}

// tickAt queues a tick of node i at t.
func (w *simWorker) tickAt(i int32, t int64) {
	n := &w.s.nodes[i]
	*w.slot(t, i) = simEvent{at: t, from: i, to: i, cnt: n.cnt, kind: simTick}
	n.cnt++
}

// send sends a message of node i at at: lost, or delivered after a
// latency, both drawn from node i's source.
func (w *simWorker) send(i int32, at int64, snd *Send) {
	s := w.s
	w.sent++
	if int(snd.Msg.Type) < len(w.sentByType) {
		w.sentByType[snd.Msg.Type]++
	}
	to, ok := s.lookupAddr(snd.To)
	if !ok {
		return
	}
	n := &s.nodes[i]
	if s.cfg.Loss > 0 && n.lossDraw() < s.cfg.Loss {
		w.lost++
		w.record(at, true, i, to, snd.Msg.Type, snd.Msg.TxID)
		return
	}
	lat := int64(s.cfg.LatencyMin)
	if span := int64(s.cfg.LatencyMax - s.cfg.LatencyMin); span > 0 {
		lat += n.latencyDraw(span)
	}
	e := w.slot(at+lat, to)
	*e = simEvent{at: at + lat, from: i, to: to, cnt: n.cnt, kind: simDeliver, typ: snd.Msg.Type, txid: snd.Msg.TxID}
	n.cnt++
	switch snd.Msg.Type {
	case proto.DHTPing, proto.DHTPong, proto.DHTFindNode, proto.DHTFindValue, proto.DHTNodes:
		e.sender, e.target, e.contacts = snd.Msg.Sender, snd.Msg.Target, snd.Msg.Contacts
	default:
		m := snd.Msg
		e.full = &m
	}
}

// collect sends what node i's core produced at at and keeps its
// results; it reports whether a request went out.
func (w *simWorker) collect(i int32, at int64) bool {
	sends, results := w.s.nodes[i].core.Ready()
	for _, r := range results {
		w.results = append(w.results, simResult{i, r})
	}
	req := false
	for k := range sends {
		req = req || sends[k].Msg.Type.IsRequest()
		w.send(i, at, &sends[k])
	}
	if sends != nil {
		w.lend = sends[:0] // the messages were copied into their events
	}
	return req
}

// record digests a message delivered or lost at at (and keeps a line of
// it for Sim.Trace). The digest is a sum, so the order in which the
// workers record does not matter.
func (w *simWorker) record(at int64, lost bool, from, to int32, typ proto.DHTType, txid uint64) {
	x := uint64(typ)<<56 ^ txid
	if lost {
		x ^= 1 << 55
	}
	h := uint64(traceInit)
	for _, v := range [3]uint64{uint64(at), uint64(uint32(from))<<32 | uint64(uint32(to)), x} {
		h = (h ^ v) * 0x9e3779b97f4a7c15
		h ^= h >> 29
	}
	w.trace += h
	if w.s.Trace != nil {
		w.lines = append(w.lines, simLine{at, lost, from, to, typ})
	}
}

// runGroup runs group g's events of window b due before end: by node,
// each node's in order.
func (w *simWorker) runGroup(b *simBucket, g int, end int64) {
	nw := len(w.s.workers)
	refs, keys := w.refs[:0], w.keys[:0]
	cut := false // some events are not due yet
	for p := range nw {
		l := b.lists[g*nw+p]
		for j := range l {
			if l[j].at >= end {
				cut = true
				continue
			}
			keys = append(keys, uint64(uint32(l[j].to))<<32|uint64(len(refs)))
			refs = append(refs, &l[j])
		}
	}
	slices.Sort(keys)
	ord := w.run[:0]
	for _, k := range keys {
		ord = append(ord, refs[uint32(k)])
	}
	const ahead = 16
	next := 0
	for lo := 0; lo < len(ord); {
		if lo >= next {
			next = min(lo+ahead, len(ord))
			w.touch(ord[lo:next])
		}
		node := ord[lo].to
		hi := lo + 1
		for hi < len(ord) && ord[hi].to == node {
			hi++
		}
		evs := ord[lo:hi]
		if len(evs) > 24 {
			slices.SortFunc(evs, func(a, b *simEvent) int {
				switch {
				case a.before(b):
					return -1
				case b.before(a):
					return 1
				}
				return 0
			})
		} else {
			for x := 1; x < len(evs); x++ {
				for y := x; y > 0 && evs[y].before(evs[y-1]); y-- {
					evs[y], evs[y-1] = evs[y-1], evs[y]
				}
			}
		}
		w.runNode(node, evs, end)
		lo = hi
	}
	w.events += len(ord)
	clear(refs)
	clear(ord)
	w.refs, w.keys, w.run = refs[:0], keys[:0], ord[:0]
	for p := range nw {
		l := &b.lists[g*nw+p]
		if !cut {
			*l = (*l)[:0]
			continue
		}
		kept := 0
		for j := range *l {
			if (*l)[j].at >= end {
				(*l)[kept] = (*l)[j]
				kept++
			}
		}
		*l = (*l)[:kept]
	}
}

// touch loads, level by level, the memory the next events will need
// first (each event's node, its core, table, the sender's and the
// target's buckets, an answer's pending RPC and lookup): the cache
// misses of several events then overlap instead of coming one after
// another, the simulation's main cost at 100,000 nodes (every event
// lands in another node's memory). It only reads the nodes of the
// worker's own range (and the IDs of the senders, which never change).
func (w *simWorker) touch(items []*simEvent) {
	s := w.s
	var cores [16]*Core
	var froms [16]*simNode
	var x uintptr
	for k, e := range items {
		cores[k] = s.nodes[e.to].core
		froms[k] = &s.nodes[max(e.from, 0)] // a join's maker is -1
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
	for k, e := range items {
		t := tables[k]
		x += uintptr(t.size)
		if p := proto.CommonPrefixLen(t.self, froms[k].id); p < len(t.buckets) && len(buckets) < cap(buckets) {
			buckets = append(buckets, &t.buckets[p])
		}
		if e.kind == simDeliver && (e.typ == proto.DHTFindNode || e.typ == proto.DHTFindValue) {
			p := proto.CommonPrefixLen(t.self, e.target)
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
	for k, e := range items {
		if e.kind == simDeliver && !e.typ.IsRequest() {
			if i := cores[k].pending.find(e.txid); i >= 0 {
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
			for _, c := range items[k].contacts {
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

// runNode runs node i's events of the window (in order), and the ticks
// it schedules inside the window, in time order (a tick after the events
// of its time, as it was scheduled after them).
func (w *simWorker) runNode(i int32, evs []*simEvent, end int64) {
	s := w.s
	n := &s.nodes[i]
	if !n.alive {
		return
	}
	local := w.local[:0] // ticks due inside the window, in order
	next := 0
	tick := simEvent{kind: simTick, to: i}
	for k := 0; k < len(evs) || next < len(local); {
		var at int64
		e := &tick
		if k < len(evs) && (next == len(local) || evs[k].at <= local[next]) {
			e, at = evs[k], evs[k].at
			k++
		} else {
			at = local[next]
			next++
		}
		w.last = max(w.last, at)
		n.core.lendSends(w.lend)
		w.lend = nil
		n.core.contacts = &w.pool
		now := time.Unix(0, at)
		switch e.kind {
		case simDeliver:
			w.delivered++
			w.record(at, false, e.from, i, e.typ, e.txid)
			m := e.message()
			if s.coll != nil && s.coll.is[i] {
				if m.Type.IsRequest() {
					if reply, ok := s.collude(i, e.from, m, at); ok {
						n.core.sends = append(n.core.sends, Send{To: s.nodes[e.from].core.Contact(), Msg: reply})
					}
				}
			} else {
				_ = n.core.handle(s.nodes[e.from].id, simAddr(int(e.from)).Addr(), &m, now)
			}
			w.pool.put(m.Contacts) // the core copied what it keeps
		case simTick:
			if n.tickAt == at {
				n.tickAt = 0
			}
			n.core.Tick(now)
		case simJoin:
			_, _ = n.core.Bootstrap([]proto.DHTContact{s.nodes[0].core.Contact()}, now)
		}
		req := w.collect(i, at)
		if t := s.nextTick(i, at, req, e.kind == simTick); t != 0 {
			if t < end {
				j := len(local)
				for j > next && local[j-1] > t {
					j--
				}
				local = slices.Insert(local, j, t)
			} else {
				w.tickAt(i, t)
			}
		}
	}
	w.local = local[:0]
}

// nextTick is the tick node i needs after an event at at (0: none): a
// tick runs by its core's next deadline, and every request times out
// RPCTimeout after it is sent, so the first of a burst (req: the event
// sent one) sets the next deadline (the tick schedules the rest).
func (s *Sim) nextTick(i int32, at int64, req, ticked bool) int64 {
	n := &s.nodes[i]
	if ticked && n.tickAt == 0 {
		if d := n.core.NextDeadline(); !d.IsZero() {
			n.tickAt = d.UnixNano()
			return n.tickAt
		}
	}
	if n.tickAt != 0 || !req {
		return 0
	}
	n.tickAt = at + int64(s.cfg.Core.RPCTimeout)
	return n.tickAt
}

// flush sends what node i's core asked for outside any event (an
// operation just started).
func (s *Sim) flush(i int32) {
	w := s.workers[0]
	s.nodes[i].core.lendSends(w.lend)
	w.lend = nil
	req := w.collect(i, s.now)
	if t := s.nextTick(i, s.now, req, false); t != 0 {
		w.tickAt(i, t)
	}
	s.gather()
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

// gather takes in what the workers did: counts, digests, results, trace
// lines, and the events they made beyond the calendar.
func (s *Sim) gather() int {
	ran := 0
	for _, w := range s.workers {
		ran += w.events
		s.Sent += w.sent
		s.Delivered += w.delivered
		s.Lost += w.lost
		for t, n := range w.sentByType {
			s.SentByType[t] += n
		}
		s.trace += w.trace
		s.now = max(s.now, w.last)
		for _, r := range w.results {
			if p, ok := s.want[simKey{r.node, r.r.Op}]; ok {
				*p = r.r
				delete(s.want, simKey{r.node, r.r.Op})
			}
		}
		s.lines = append(s.lines, w.lines...)
		for j := range w.far {
			var idx int32
			if n := len(s.farFree); n > 0 {
				idx = s.farFree[n-1]
				s.farFree = s.farFree[:n-1]
			} else {
				idx = int32(len(s.farEvents))
				s.farEvents = append(s.farEvents, simEvent{})
			}
			e := &w.far[j]
			s.farEvents[idx] = *e
			s.far.push(simItem{at: e.at, from: e.from, cnt: e.cnt, idx: idx})
		}
		clear(w.far)
		clear(w.results)
		w.far, w.results, w.lines = w.far[:0], w.results[:0], w.lines[:0]
		w.events, w.sent, w.delivered, w.lost, w.trace, w.last = 0, 0, 0, 0, 0, 0
		w.sentByType = [len(w.sentByType)]uint64{}
	}
	if s.Trace != nil && len(s.lines) > 0 {
		slices.SortFunc(s.lines, func(a, b simLine) int {
			return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.from, b.from), cmp.Compare(a.to, b.to),
				cmp.Compare(a.typ, b.typ), cmp.Compare(b2i(a.lost), b2i(b.lost)))
		})
		for _, l := range s.lines {
			what := "deliver"
			if l.lost {
				what = "lost"
			}
			// No transaction IDs: they are random (seeded), and a golden
			// trace should change only where behaviour does.
			fmt.Fprintf(s.Trace, "%9.3fms %-7s %3d -> %3d %v\n", float64(l.at-s.cfg.Start.UnixNano())/1e6, what, l.from, l.to, l.typ)
		}
	}
	s.lines = s.lines[:0]
	return ran
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// joinAt is when node j joins in Build.
func (s *Sim) joinAt(j int32) int64 { return s.joinBase + int64(j)*int64(s.cfg.JoinSpacing) }

// mainSlot returns a new event for node to at at, in window [cur,
// cur+simRing) of the calendar, made between windows.
func (s *Sim) mainSlot(at int64, to int32) *simEvent {
	b := s.winOf(at) & (simRing - 1)
	s.workers[0].counts[b]++
	return grow(&s.ring[b].lists[int(to)&(simGroups-1)*len(s.workers)])
}

// window runs the events of the next window, none later than limit (a
// unix nanosecond time), and returns how many ran; 0 if none is due.
func (s *Sim) window(limit int64) int {
	k := int64(-1)
	for d := range int64(simRing) {
		if s.count(s.cur+d) > 0 {
			k = s.cur + d
			break
		}
	}
	if len(s.far) > 0 {
		if f := s.winOf(s.far[0].at); k < 0 || f < k {
			k = f
		}
	}
	if s.joinNext < s.joinEnd {
		if j := s.winOf(s.joinAt(s.joinNext)); k < 0 || j < k {
			k = j
		}
	}
	if k < 0 || s.base+k*s.width > limit {
		return 0
	}
	s.cur = k
	end := s.base + (k+1)*s.width
	if limit < end {
		end = limit + 1
	}
	for len(s.far) > 0 && s.winOf(s.far[0].at) < s.cur+simRing {
		it := s.far.pop()
		e := &s.farEvents[it.idx]
		*s.mainSlot(e.at, e.to) = *e
		*e = simEvent{}
		s.farFree = append(s.farFree, it.idx)
	}
	for ; s.joinNext < s.joinEnd && s.winOf(s.joinAt(s.joinNext)) <= k; s.joinNext++ {
		j := s.joinNext
		*s.mainSlot(s.joinAt(j), j) = simEvent{at: s.joinAt(j), from: -1, to: j, cnt: uint32(j), kind: simJoin}
	}
	b := &s.ring[k&(simRing-1)]
	if len(s.workers) == 1 || s.coll != nil || s.count(k) < s.parallelMin {
		for g := range simGroups {
			s.workers[0].runGroup(b, g, end)
		}
	} else {
		s.parallel++
		s.bucket, s.end = b, end
		// The largest groups first, so the workers end together.
		var size [simGroups]int
		for g := range s.order {
			s.order[g] = int8(g)
			for _, l := range b.lists[g*len(s.workers) : (g+1)*len(s.workers)] {
				size[g] += len(l)
			}
		}
		slices.SortStableFunc(s.order[:], func(x, y int8) int { return size[y] - size[x] })
		s.nextGroup.Store(0)
		s.pending.Store(int32(len(s.workers) - 1))
		s.startHelpers()
		s.gen.Add(1)
		for _, w := range s.workers[1:] {
			if w.sleeping.CompareAndSwap(true, false) {
				w.wake <- struct{}{}
			}
		}
		s.work(s.workers[0])
		s.awaitHelpers()
		balance(s.pools)
	}
	left := 0 // not due yet: the window was cut short by limit
	for _, l := range b.lists {
		left += len(l)
	}
	for _, w := range s.workers {
		w.counts[k&(simRing-1)] = 0
	}
	s.workers[0].counts[k&(simRing-1)] = int32(left)
	return s.gather()
}

// work runs groups of the running window until none is left.
func (s *Sim) work(w *simWorker) {
	for {
		g := int(s.nextGroup.Add(1)) - 1
		if g >= simGroups {
			return
		}
		w.runGroup(s.bucket, int(s.order[g]), s.end)
	}
}

// spin reports whether ready became true within simSpin.
func spin(ready func() bool) bool {
	deadline := time.Now().Add(simSpin)
	for i := 0; ; i++ {
		if ready() {
			return true
		}
		if i%64 == 63 && time.Now().After(deadline) {
			return false
		}
	}
}

// startHelpers starts the workers other than the first, which wait for
// windows until stopHelpers.
func (s *Sim) startHelpers() {
	if s.started {
		return
	}
	s.started = true
	seen := s.gen.Load()
	for _, w := range s.workers[1:] {
		s.helpers.Add(1)
		go w.help(seen)
	}
}

// stopHelpers stops the workers startHelpers started.
func (s *Sim) stopHelpers() {
	if !s.started {
		return
	}
	s.quit.Store(true)
	s.gen.Add(1)
	for _, w := range s.workers[1:] {
		if w.sleeping.CompareAndSwap(true, false) {
			w.wake <- struct{}{}
		}
	}
	s.helpers.Wait()
	s.quit.Store(false)
	s.started = false
}

// help runs windows' groups, each when the Sim bumps gen, until quit.
func (w *simWorker) help(seen uint32) {
	s := w.s
	defer s.helpers.Done()
	for {
		seen = w.await(seen)
		if s.quit.Load() {
			return
		}
		s.work(w)
		if s.pending.Add(-1) == 0 && s.mainSleeping.CompareAndSwap(true, false) {
			s.done <- struct{}{}
		}
	}
}

// await waits, spinning then asleep, for gen to move on from seen.
func (w *simWorker) await(seen uint32) uint32 {
	s := w.s
	for {
		if spin(func() bool { return s.gen.Load() != seen }) {
			return s.gen.Load()
		}
		w.sleeping.Store(true)
		if g := s.gen.Load(); g != seen {
			if !w.sleeping.CompareAndSwap(true, false) {
				<-w.wake // the Sim saw this worker asleep and woke it
			}
			return g
		}
		<-w.wake
	}
}

// awaitHelpers waits, spinning then asleep, for the helpers to end the
// window.
func (s *Sim) awaitHelpers() {
	if spin(func() bool { return s.pending.Load() == 0 }) {
		return
	}
	s.mainSleeping.Store(true)
	if s.pending.Load() == 0 {
		if !s.mainSleeping.CompareAndSwap(true, false) {
			<-s.done
		}
		return
	}
	<-s.done
}

// RunIdle runs events until none is left.
func (s *Sim) RunIdle() error {
	defer s.stopHelpers()
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
	s.joinBase, s.joinNext, s.joinEnd = s.now, 1, int32(len(s.nodes))
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
	defer s.stopHelpers()
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
	defer s.stopHelpers()
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
