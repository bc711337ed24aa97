package kademlia

import (
	"context"
	crand "crypto/rand"
	"fmt"
	"math/rand/v2"
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
	// dropped (Deliver returns ErrInboxFull).
	InboxSize int
	// MaxSends bounds the sends in progress; an RPC beyond it fails at
	// once (an answer beyond it is dropped).
	MaxSends int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Rand seeds transaction IDs and refresh targets; nil means a seed
	// from crypto/rand.
	Rand *rand.Rand
}

// DefaultNodeConfig returns the settings a veil node runs with.
func DefaultNodeConfig() NodeConfig {
	return NodeConfig{DHT: DefaultConfig(), TickInterval: 250 * time.Millisecond, InboxSize: 1024, MaxSends: 64}
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
	case c.MaxSends < 1:
		return fmt.Errorf("%w: MaxSends = %d", ErrBadConfig, c.MaxSends)
	}
	return nil
}

type inbound struct {
	from    proto.NodeID
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

	inbox   chan inbound
	calls   chan call
	failed  chan uint64 // transaction IDs whose send failed
	sem     chan struct{}
	waiters map[OpID]chan Result // owned by Run

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
		inbox:   make(chan inbound, cfg.InboxSize),
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
// identity the link authenticated). It copies payload and never blocks:
// with the inbox full the RPC is dropped and ErrInboxFull returned.
func (n *Node) Deliver(from proto.NodeID, payload []byte) error {
	if len(payload) > proto.MaxDHTMessage {
		n.rejected.Add(1)
		return fmt.Errorf("kademlia: %w: RPC of %d bytes", proto.ErrTooLong, len(payload))
	}
	select {
	case <-n.stop:
		return ErrClosed
	default:
	}
	select {
	case n.inbox <- inbound{from: from, payload: append([]byte(nil), payload...)}:
		return nil
	default:
		return ErrInboxFull
	}
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
		case in := <-n.inbox:
			n.received.Add(1)
			m, err := proto.ParseDHTMessage(in.payload)
			if err == nil {
				err = n.core.Handle(in.from, m, n.cfg.Now())
			}
			if err != nil {
				n.rejected.Add(1)
			}
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
			select {
			case n.sem <- struct{}{}:
			default:
				if s.Msg.Type.IsRequest() {
					n.core.Unreachable(s.Msg.TxID, now)
				}
				continue
			}
			n.senders.Add(1)
			go n.send(ctx, s.To, s.Msg.Type.IsRequest(), s.Msg.TxID, payload)
		}
	}
}

func (n *Node) send(ctx context.Context, to proto.DHTContact, request bool, txid uint64, payload []byte) {
	defer n.senders.Done()
	defer func() { <-n.sem }()
	sctx, cancel := context.WithTimeout(ctx, n.cfg.DHT.RPCTimeout)
	err := n.tr.Send(sctx, to, payload)
	cancel()
	if err != nil && request {
		select {
		case n.failed <- txid:
		case <-ctx.Done():
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
	st.Received, st.Rejected = n.received.Load(), n.rejected.Load()
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
