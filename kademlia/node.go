package kademlia

import (
	"context"
	crand "crypto/rand"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"veil/proto"
)

// NodeConfig sets up a Node.
type NodeConfig struct {
	// DHT is the protocol config.
	DHT Config
	// Bridges are the nodes to join through (FIND_PEER / FOUND_PEER);
	// Run bootstraps through them when it starts.
	Bridges []proto.DHTContact
	// TickInterval is how often the core is ticked (timeouts, refresh,
	// republish); at most RPCTimeout.
	TickInterval time.Duration
	// InboxSize bounds the received RPCs waiting for Run; more are
	// dropped (Deliver returns ErrInboxFull). Run takes them one peer at
	// a time, round robin, so a peer that floods delays the others by one
	// RPC per turn, not by the whole inbox.
	InboxSize int
	// InboxPerPeer bounds the RPCs of one peer waiting in the inbox. A
	// peer is a /24 (/48) when DHT.MaxPerSubnet is set: identities cost
	// a flooder little, addresses more.
	// With the inbox full, an RPC from a peer with fewer waiting pushes
	// out the oldest of the peer with most waiting.
	InboxPerPeer int
	// MaxSends bounds the sends in progress; an RPC beyond it fails at
	// once (an answer beyond it is dropped).
	MaxSends int
	// MaxSendsPerPeer bounds the sends in progress to one peer; more RPCs
	// to it wait behind them (up to 64, then they fail). A peer that stops
	// reading (its link's queue full, each send waiting out RPCTimeout)
	// holds this many of the MaxSends slots, not all.
	MaxSendsPerPeer int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Rand seeds transaction IDs and refresh targets; nil means a seed
	// from crypto/rand.
	Rand *rand.Rand
}

// DefaultNodeConfig returns the settings a veil node runs with.
func DefaultNodeConfig() NodeConfig {
	return NodeConfig{DHT: DefaultConfig(), TickInterval: 250 * time.Millisecond, InboxSize: 1024, InboxPerPeer: 64, MaxSends: 64, MaxSendsPerPeer: 4}
}

// Validate reports the first bad setting, naming it.
func (c NodeConfig) Validate() error {
	if err := c.DHT.Validate(); err != nil {
		return err
	}
	switch {
	case c.TickInterval <= 0 || c.TickInterval > c.DHT.RPCTimeout:
		return fmt.Errorf("%w: TickInterval = %v (0..RPCTimeout)", ErrBadConfig, c.TickInterval)
	case c.InboxSize < 1:
		return fmt.Errorf("%w: InboxSize = %d", ErrBadConfig, c.InboxSize)
	case c.InboxPerPeer < 1 || c.InboxPerPeer > c.InboxSize:
		return fmt.Errorf("%w: InboxPerPeer = %d (1..InboxSize)", ErrBadConfig, c.InboxPerPeer)
	case c.MaxSends < 1:
		return fmt.Errorf("%w: MaxSends = %d", ErrBadConfig, c.MaxSends)
	case c.MaxSendsPerPeer < 1 || c.MaxSendsPerPeer > c.MaxSends:
		return fmt.Errorf("%w: MaxSendsPerPeer = %d (1..MaxSends)", ErrBadConfig, c.MaxSendsPerPeer)
	}
	return nil
}

type inbound struct {
	from    proto.NodeID
	ip      netip.Addr
	payload []byte
}

type call struct {
	start func(now time.Time) (OpID, error)
	done  chan Result // buffered: Run never blocks on it
}

// NodeStats is a snapshot of a Node.
type NodeStats struct {
	TableSize int // contacts in the routing table
	Records   int // records held for others
	Pending   int // RPCs awaiting an answer
	Received  uint64
	Rejected  uint64 // RPCs that did not parse or were refused
	Dropped   uint64 // RPCs dropped from a full inbox
}

// Node is the DHT service: one goroutine (Run) owns the Core and drives it
// with received RPCs, a ticker and calls from other goroutines; sender
// goroutines push RPCs through the Transport. Its methods are safe for
// concurrent use.
type Node struct {
	cfg  NodeConfig
	id   Identity
	core *Core // owned by Run
	tr   Transport

	inbox   *fairInbox
	calls   chan call
	failed  chan uint64 // transaction IDs whose send failed
	sem     chan struct{}
	waiters map[OpID]chan Result // owned by Run

	sendsMu sync.Mutex // guards sendsTo
	sendsTo map[proto.NodeID]*peerSends

	received, rejected atomic.Uint64
	lookups            lookupCounters // lookupstats.go

	stop      chan struct{}
	closeOnce sync.Once
	running   atomic.Bool
	done      chan struct{} // closed when Run returns
	senders   sync.WaitGroup
}

// NewNode returns a node for identity id sending through tr. Call Run.
func NewNode(cfg NodeConfig, id Identity, tr Transport) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		var seed [32]byte
		if _, err := crand.Read(seed[:]); err != nil {
			return nil, fmt.Errorf("kademlia: seeding: %w", err)
		}
		cfg.Rand = rand.New(rand.NewChaCha8(seed))
	}
	core, err := NewCore(cfg.DHT, id, cfg.Rand)
	if err != nil {
		return nil, err
	}
	return &Node{
		cfg: cfg, id: id, core: core, tr: tr,
		// Kept by subnet where the table limits subnets: test networks on
		// 127.0.0.1 (MaxPerSubnet 0) are one subnet.
		inbox:   newFairInbox(cfg.InboxSize, cfg.InboxPerPeer, cfg.DHT.MaxPerSubnet > 0),
		sendsTo: make(map[proto.NodeID]*peerSends),
		calls:   make(chan call),
		failed:  make(chan uint64, cfg.MaxSends),
		sem:     make(chan struct{}, cfg.MaxSends),
		waiters: make(map[OpID]chan Result),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}, nil
}

// ID is the node's ID.
func (n *Node) ID() proto.NodeID { return n.id.ID }

// Contact is the node as others reach it.
func (n *Node) Contact() proto.DHTContact { return proto.DHTContact{ID: n.id.ID, Addr: n.id.Addr} }

// Deliver hands the node one RPC received from the node from (whose
// identity the link authenticated) over a link from address ip (the
// link's remote address; the zero Addr if unknown). It copies payload and
// never blocks: when from already has InboxPerPeer RPCs waiting, or the
// inbox is full and from has at least as many waiting as anyone, the RPC
// is dropped and ErrInboxFull returned.
func (n *Node) Deliver(from proto.NodeID, ip netip.Addr, payload []byte) error {
	if len(payload) > proto.MaxDHTMessage {
		n.rejected.Add(1)
		return fmt.Errorf("kademlia: %w: RPC of %d bytes", proto.ErrTooLong, len(payload))
	}
	select {
	case <-n.stop:
		return ErrClosed
	default:
	}
	return n.inbox.push(inbound{from: from, ip: ip, payload: append([]byte(nil), payload...)})
}

// Run drives the node until ctx ends or Close is called. It bootstraps
// through the configured bridges first. Call it once.
func (n *Node) Run(ctx context.Context) error {
	if !n.running.CompareAndSwap(false, true) {
		return fmt.Errorf("kademlia: Run called twice")
	}
	defer close(n.done)
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		n.senders.Wait()
		for id, ch := range n.waiters {
			ch <- Result{Op: id, Err: ErrClosed}
		}
	}()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	if len(n.cfg.Bridges) > 0 {
		_, _ = n.core.Bootstrap(n.cfg.Bridges, n.cfg.Now())
		n.flush(ctx)
	}
	tick := time.NewTicker(n.cfg.TickInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-n.inbox.ready:
			// A batch, one RPC per peer per turn; the rest waits for the
			// next wake so timers and calls are not starved.
			for range inboxBatch {
				in, ok := n.inbox.pop()
				if !ok {
					break
				}
				n.received.Add(1)
				m, err := proto.ParseDHTMessage(in.payload)
				if err == nil {
					err = n.core.Handle(in.from, in.ip, m, n.cfg.Now())
				}
				if err != nil {
					n.rejected.Add(1)
				}
				n.flush(ctx)
			}
			n.inbox.rearm()
		case txid := <-n.failed:
			n.core.Unreachable(txid, n.cfg.Now())
		case c := <-n.calls:
			id, err := c.start(n.cfg.Now())
			if err != nil {
				c.done <- Result{Err: err}
			} else {
				n.waiters[id] = c.done
			}
		case <-tick.C:
			n.core.Tick(n.cfg.Now())
		}
		n.flush(ctx)
	}
}

// flush hands the core's RPCs to sender goroutines and its results to
// their waiters.
func (n *Node) flush(ctx context.Context) {
	for {
		sends, results := n.core.Ready()
		for _, r := range results {
			n.lookups.count(r)
			if ch, ok := n.waiters[r.Op]; ok {
				ch <- r
				delete(n.waiters, r.Op)
			}
		}
		if len(sends) == 0 {
			return
		}
		now := n.cfg.Now()
		for _, s := range sends {
			if err := s.Msg.Validate(); err != nil {
				// A programming error: the core built a message that
				// cannot go on the wire. Fail the RPC, do not crash.
				n.core.Unreachable(s.Msg.TxID, now)
				continue
			}
			payload := s.Msg.Append(make([]byte, 0, s.Msg.Len()))
			if !n.startSend(ctx, outSend{s.To, s.Msg.Type.IsRequest(), s.Msg.TxID, payload}) {
				if s.Msg.Type.IsRequest() {
					n.core.Unreachable(s.Msg.TxID, now)
				}
				continue
			}
		}
	}
}

// outSend is one encoded RPC for a sender goroutine.
type outSend struct {
	to      proto.DHTContact
	request bool
	txid    uint64
	payload []byte
}

// peerSends is what is being sent to one peer: sender goroutines at work
// (each holding one of the MaxSends slots) and RPCs waiting for one of
// them.
type peerSends struct {
	active int
	queue  []outSend
}

// startSend hands s to a sender goroutine: a new one if s's peer has
// fewer than MaxSendsPerPeer and a MaxSends slot is free, else it waits
// behind the peer's others (at most peerQueue). false: s was dropped.
func (n *Node) startSend(ctx context.Context, s outSend) bool {
	n.sendsMu.Lock()
	defer n.sendsMu.Unlock()
	ps := n.sendsTo[s.to.ID]
	if ps == nil {
		ps = &peerSends{}
		n.sendsTo[s.to.ID] = ps
	}
	if ps.active < n.cfg.MaxSendsPerPeer {
		select {
		case n.sem <- struct{}{}:
			ps.active++
			n.senders.Add(1)
			go n.send(ctx, s)
			return true
		default:
		}
	}
	if ps.active > 0 && len(ps.queue) < peerQueue {
		ps.queue = append(ps.queue, s)
		return true
	}
	if ps.active == 0 {
		delete(n.sendsTo, s.to.ID)
	}
	return false
}

// peerQueue bounds the RPCs waiting behind one peer's sender goroutines.
const peerQueue = 64

// nextSend returns the next RPC waiting for peer, keeping the caller's
// slot, or releases the slot and returns false.
func (n *Node) nextSend(peer proto.NodeID) (outSend, bool) {
	n.sendsMu.Lock()
	defer n.sendsMu.Unlock()
	ps := n.sendsTo[peer]
	if len(ps.queue) > 0 {
		s := ps.queue[0]
		ps.queue[0] = outSend{}
		ps.queue = ps.queue[1:]
		return s, true
	}
	ps.active--
	if ps.active == 0 {
		delete(n.sendsTo, peer)
	}
	<-n.sem
	return outSend{}, false
}

// send pushes s, then whatever waits behind it for the same peer, each
// bounded by RPCTimeout: a peer that reads nothing holds at most
// MaxSendsPerPeer goroutines and slots, each for RPCTimeout per RPC.
func (n *Node) send(ctx context.Context, s outSend) {
	defer n.senders.Done()
	for ok := true; ok; s, ok = n.nextSend(s.to.ID) {
		if ctx.Err() != nil {
			continue // drain the queue without sending
		}
		sctx, cancel := context.WithTimeout(ctx, n.cfg.DHT.RPCTimeout)
		err := n.tr.Send(sctx, s.to, s.payload)
		cancel()
		if err != nil && s.request {
			select {
			case n.failed <- s.txid:
			case <-ctx.Done():
			}
		}
	}
}

// do runs start on the Run goroutine and waits for the operation's result.
func (n *Node) do(ctx context.Context, start func(now time.Time) (OpID, error)) (Result, error) {
	c := call{start: start, done: make(chan Result, 1)}
	select {
	case n.calls <- c:
	case <-ctx.Done():
		return Result{}, ctx.Err()
	case <-n.done:
		return Result{}, ErrClosed
	case <-n.stop:
		return Result{}, ErrClosed
	}
	select {
	case r := <-c.done:
		return r, r.Err
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

// FindNode runs an iterative FIND_NODE of target.
func (n *Node) FindNode(ctx context.Context, target proto.NodeID) (Result, error) {
	return n.do(ctx, func(now time.Time) (OpID, error) { return n.core.FindNode(target, now) })
}

// FindValue runs an iterative FIND_VALUE of key; the Result carries the
// verified provider records found.
func (n *Node) FindValue(ctx context.Context, key proto.HashName) (Result, error) {
	return n.do(ctx, func(now time.Time) (OpID, error) { return n.core.FindValue(key, now) })
}

// Provide announces that this node serves key (P = pieces, F =
// facilitator) and returns once the record is stored on the closest nodes;
// the node republishes it every RepublishInterval.
func (n *Node) Provide(ctx context.Context, key proto.HashName, pieces uint8, facilitator bool) (Result, error) {
	return n.do(ctx, func(now time.Time) (OpID, error) { return n.core.Provide(key, pieces, facilitator, now) })
}

// Bootstrap joins through bridges (or the configured ones when nil).
func (n *Node) Bootstrap(ctx context.Context, bridges []proto.DHTContact) (Result, error) {
	if bridges == nil {
		bridges = n.cfg.Bridges
	}
	return n.do(ctx, func(now time.Time) (OpID, error) { return n.core.Bootstrap(bridges, now) })
}

// Stats returns a snapshot of the node.
func (n *Node) Stats(ctx context.Context) (NodeStats, error) {
	var st NodeStats
	_, err := n.do(ctx, func(time.Time) (OpID, error) {
		st = NodeStats{TableSize: n.core.Table().Len(), Records: n.core.Store().Len(), Pending: n.core.Pending()}
		return 0, errStatsDone
	})
	if err != errStatsDone {
		return NodeStats{}, err
	}
	st.Received, st.Rejected, st.Dropped = n.received.Load(), n.rejected.Load(), n.inbox.dropped.Load()
	return st, nil
}

// errStatsDone ends a call that starts no operation.
var errStatsDone = fmt.Errorf("kademlia: stats taken")

// Close stops Run and waits for it to return. It is idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() { close(n.stop) })
	if n.running.Load() {
		<-n.done
	}
	return nil
}
