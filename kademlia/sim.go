package kademlia

import (
	"container/heap"
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"hash"
	"hash/fnv"
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
// no loss.
func DefaultSimConfig(n int, seed uint64) SimConfig {
	return SimConfig{
		Nodes: n, Seed: seed, Core: DefaultConfig(),
		LatencyMin: 10 * time.Millisecond, LatencyMax: 100 * time.Millisecond,
		JoinSpacing: 10 * time.Millisecond,
		Start:       time.Unix(1_800_000_000, 0),
		MaxEvents:   50_000_000,
	}
}

type simEventKind uint8

const (
	simDeliver simEventKind = iota
	simTick
	simJoin
)

type simEvent struct {
	at       int64 // virtual unix nanoseconds
	seq      uint64
	kind     simEventKind
	to, from int32
	msg      proto.DHTMessage
}

type simQueue []*simEvent

func (q simQueue) Len() int { return len(q) }
func (q simQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q simQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *simQueue) Push(x any)   { *q = append(*q, x.(*simEvent)) }
func (q *simQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return e
}

type simNode struct {
	core  *Core
	alive bool
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
	cfg   SimConfig
	rng   *rand.Rand
	now   int64
	nodes []simNode
	index map[proto.NodeID]int32
	q     simQueue
	seq   uint64
	trace hash.Hash64
	want  map[simKey]*Result

	// Trace, if set, gets one line per message delivered or lost.
	Trace io.Writer
	// Sent, Delivered and Lost count messages.
	Sent, Delivered, Lost uint64
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
		trace: fnv.New64a(),
		want:  make(map[simKey]*Result),
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
		s.nodes[i] = simNode{core: c, alive: true}
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
func (s *Sim) TraceHash() uint64 { return s.trace.Sum64() }

func (s *Sim) push(e *simEvent) {
	s.seq++
	e.seq = s.seq
	heap.Push(&s.q, e)
}

// flush schedules what node i's core asked for.
func (s *Sim) flush(i int32) {
	sends, results := s.nodes[i].core.Ready()
	for _, r := range results {
		if p, ok := s.want[simKey{i, r.Op}]; ok {
			*p = r
			delete(s.want, simKey{i, r.Op})
		}
	}
	for _, snd := range sends {
		s.Sent++
		if snd.Msg.Type.IsRequest() {
			s.push(&simEvent{at: s.now + int64(s.cfg.Core.RPCTimeout), kind: simTick, to: i})
		}
		to, ok := s.index[snd.To.ID]
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
		s.push(&simEvent{at: s.now + int64(lat), kind: simDeliver, to: to, from: i, msg: snd.Msg})
	}
}

func (s *Sim) record(what string, from, to int32, m proto.DHTMessage) {
	var b [8 + 4 + 4 + 1 + 8]byte
	binary.LittleEndian.PutUint64(b[0:], uint64(s.now))
	binary.LittleEndian.PutUint32(b[8:], uint32(from))
	binary.LittleEndian.PutUint32(b[12:], uint32(to))
	b[16] = byte(m.Type)
	binary.LittleEndian.PutUint64(b[17:], m.TxID)
	s.trace.Write(b[:])
	if s.Trace != nil {
		fmt.Fprintf(s.Trace, "%d %s %d->%d %v tx=%016x\n", s.now-s.cfg.Start.UnixNano(), what, from, to, m.Type, m.TxID)
	}
}

// step runs one event; false when the queue is empty.
func (s *Sim) step() bool {
	if len(s.q) == 0 {
		return false
	}
	e := heap.Pop(&s.q).(*simEvent)
	s.now = e.at
	n := &s.nodes[e.to]
	if !n.alive {
		return true
	}
	now := time.Unix(0, s.now)
	switch e.kind {
	case simDeliver:
		s.Delivered++
		s.record("deliver", e.from, e.to, e.msg)
		_ = n.core.Handle(s.nodes[e.from].core.ID(), e.msg, now)
	case simTick:
		n.core.Tick(now)
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
		s.push(&simEvent{at: s.now + int64(i)*int64(s.cfg.JoinSpacing), kind: simJoin, to: int32(i)})
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
