package kademlia

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
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
	trace  uint64 // FNV-1a of the messages, as hash/fnv's New64a computes it
	want   map[simKey]*Result
	sends  []Send       // lent to the core a step runs (Core.lendSends)
	pool   *contactPool // shared by every core: the sim runs one at a time
	coll   *colluders   // nil: everyone honest

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
	if cfg.LatencyMin < 0 || cfg.LatencyMax < cfg.LatencyMin || cfg.Loss < 0 || cfg.Loss >= 1 || cfg.MaxEvents < 1 {
		return nil, fmt.Errorf("%w: sim latency/loss/events", ErrBadConfig)
	}
	s := &Sim{
		cfg:   cfg,
		rng:   rand.New(rand.NewPCG(cfg.Seed, 0x5eed)),
		now:   cfg.Start.UnixNano(),
		nodes: make([]simNode, cfg.Nodes),
		index: make(map[proto.NodeID]int32, cfg.Nodes),
		trace: fnvOffset64,
		want:  make(map[simKey]*Result),
		pool:  &contactPool{},
	}
	for i := range s.nodes {
		var seed [ed25519.SeedSize]byte
		onion := make([]byte, proto.OnionKeySize)
		for j := 0; j < len(seed); j += 8 {
			binary.LittleEndian.PutUint64(seed[j:], s.rng.Uint64())
		}
		for j := 0; j < len(onion); j += 8 {
			binary.LittleEndian.PutUint64(onion[j:], s.rng.Uint64())
		}
		key := ed25519.NewKeyFromSeed(seed[:])
		id := Identity{
			ID:       proto.NodeIDFromKey(key.Public().(ed25519.PublicKey)),
			Addr:     simAddr(i),
			OnionKey: onion,
			Key:      key,
		}
		c, err := NewCore(cfg.Core, id, rand.New(rand.NewPCG(cfg.Seed, uint64(i)+1)))
		if err != nil {
			return nil, err
		}
		c.contacts = s.pool
		s.nodes[i] = simNode{core: c, id: id.ID, alive: true}
		s.index[id.ID] = int32(i)
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

const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

func (s *Sim) push(at int64, e simEvent) {
	var idx int32
	if n := len(s.free); n > 0 {
		idx = s.free[n-1]
		s.free = s.free[:n-1]
		s.events[idx] = e
	} else {
		idx = int32(len(s.events))
		s.events = append(s.events, e)
	}
	s.seq++
	s.q.push(simItem{at: at, seq: s.seq, idx: idx})
}

// scheduleTick makes sure node i ticks by its core's next deadline.
func (s *Sim) scheduleTick(i int32) {
	n := &s.nodes[i]
	d := n.core.NextDeadline()
	if d.IsZero() {
		return
	}
	at := d.UnixNano()
	if n.tickAt != 0 && n.tickAt <= at {
		return
	}
	n.tickAt = at
	s.push(at, simEvent{kind: simTick, to: i})
}

// flush schedules what node i's core asked for.
func (s *Sim) flush(i int32) {
	c := s.nodes[i].core
	sends, results := c.Ready()
	defer func() {
		clear(sends) // drop the messages' references
		s.sends = sends[:0]
	}()
	for _, r := range results {
		if p, ok := s.want[simKey{i, r.Op}]; ok {
			*p = r
			delete(s.want, simKey{i, r.Op})
		}
	}
	requests := false
	for _, snd := range sends {
		s.Sent++
		if int(snd.Msg.Type) < len(s.SentByType) {
			s.SentByType[snd.Msg.Type]++
		}
		requests = requests || snd.Msg.Type.IsRequest()
		to, ok := s.lookupAddr(snd.To)
		if !ok {
			continue
		}
		if s.cfg.Loss > 0 && s.rng.Float64() < s.cfg.Loss {
			s.record("lost", i, to, snd.Msg)
			s.Lost++
			continue
		}
		lat := s.cfg.LatencyMin
		if span := s.cfg.LatencyMax - s.cfg.LatencyMin; span > 0 {
			lat += time.Duration(s.rng.Int64N(int64(span)))
		}
		s.push(s.now+int64(lat), simEvent{kind: simDeliver, to: to, from: i, msg: snd.Msg})
	}
	// Every request times out RPCTimeout after it is sent, so the first
	// of a burst sets the next deadline; the tick schedules the rest.
	if n := &s.nodes[i]; requests && n.tickAt == 0 {
		n.tickAt = s.now + int64(s.cfg.Core.RPCTimeout)
		s.push(n.tickAt, simEvent{kind: simTick, to: i})
	}
}

// lookupAddr finds the node of contact c: the address label carries the
// node's index, checked against the ID (the map is the fallback).
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

func (s *Sim) record(what string, from, to int32, m proto.DHTMessage) {
	var b [8 + 4 + 4 + 1 + 8]byte
	binary.LittleEndian.PutUint64(b[0:], uint64(s.now))
	binary.LittleEndian.PutUint32(b[8:], uint32(from))
	binary.LittleEndian.PutUint32(b[12:], uint32(to))
	b[16] = byte(m.Type)
	binary.LittleEndian.PutUint64(b[17:], m.TxID)
	for _, x := range b {
		s.trace = (s.trace ^ uint64(x)) * fnvPrime64
	}
	if s.Trace != nil {
		// No transaction IDs: they are random (seeded), and a golden trace
		// should change only where behaviour does.
		fmt.Fprintf(s.Trace, "%9.3fms %-7s %3d -> %3d %v\n", float64(s.now-s.cfg.Start.UnixNano())/1e6, what, from, to, m.Type)
	}
}

// step runs one event; false when the queue is empty.
func (s *Sim) step() bool {
	if len(s.q) == 0 {
		return false
	}
	it := s.q.pop()
	e := s.events[it.idx]
	s.events[it.idx] = simEvent{}
	s.free = append(s.free, it.idx)
	s.now = it.at
	n := &s.nodes[e.to]
	if !n.alive {
		return true
	}
	now := time.Unix(0, s.now)
	n.core.lendSends(s.sends)
	s.sends = nil
	switch e.kind {
	case simDeliver:
		s.Delivered++
		s.record("deliver", e.from, e.to, e.msg)
		if s.coll != nil && s.coll.is[e.to] {
			if e.msg.Type.IsRequest() {
				s.collude(e.to, e.from, e.msg)
			}
			s.pool.put(e.msg.Contacts)
			s.flush(e.to)
			return true
		}
		_ = n.core.Handle(s.nodes[e.from].id, simAddr(int(e.from)).Addr(), e.msg, now)
		s.pool.put(e.msg.Contacts) // the core copied what it keeps
	case simTick:
		if n.tickAt == it.at {
			n.tickAt = 0
		}
		n.core.Tick(now)
		if n.tickAt == 0 {
			s.scheduleTick(e.to)
		}
	case simJoin:
		_, _ = n.core.Bootstrap([]proto.DHTContact{s.nodes[0].core.Contact()}, now)
	}
	s.flush(e.to)
	return true
}

// RunIdle runs events until none is left.
func (s *Sim) RunIdle() error {
	for n := 0; n < s.cfg.MaxEvents; n++ {
		if !s.step() {
			return nil
		}
	}
	return fmt.Errorf("kademlia: sim: still busy after %d events", s.cfg.MaxEvents)
}

// Build joins nodes 1..n-1 through node 0, one every JoinSpacing, and runs
// until the network is quiet.
func (s *Sim) Build() error {
	for i := 1; i < len(s.nodes); i++ {
		s.push(s.now+int64(i)*int64(s.cfg.JoinSpacing), simEvent{kind: simJoin, to: int32(i)})
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
	for n := 0; n < s.cfg.MaxEvents; n++ {
		if _, waiting := s.want[k]; !waiting {
			return r, nil
		}
		if !s.step() {
			break
		}
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
	for n := 0; n < s.cfg.MaxEvents && len(s.q) > 0 && s.q[0].at <= end; n++ {
		s.step()
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
