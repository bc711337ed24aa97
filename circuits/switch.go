package circuits

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"veil/circuits/link"
	"veil/circuits/onion"
	"veil/proto"
)

// Service is called in its own goroutine for each stream a circuit's origin
// opens to it at this node (BEGIN with the service's name). It owns the
// stream and must return once the stream fails or ends; Switch.Close waits
// for it.
type Service func(s *Stream)

// SwitchConfig is a node's circuit-switch configuration. Start from
// DefaultSwitchConfig.
type SwitchConfig struct {
	// Flags are the roles this node plays (proto.FlagRelay, FlagORDB, ...).
	// A node without FlagRelay, FlagORDB or FlagExit refuses CREATE2.
	Flags uint8
	// MaxJoinedCircuits bounds the circuits of others we carry; CREATE2
	// beyond it is answered with DESTROY RESOURCELIMIT.
	MaxJoinedCircuits int
	// MaxJoinedPerLink bounds the circuits of others we carry that arrived
	// on one link, so one peer cannot take every MaxJoinedCircuits slot;
	// CREATE2 beyond it is answered with DESTROY RESOURCELIMIT.
	MaxJoinedPerLink int
	// JoinedIdleTimeout: a circuit of others we carry that sent no relay
	// cell back towards its origin for this long is destroyed (DESTROY
	// TIMEOUT towards both neighbours) and its slot freed; cells from the
	// origin alone do not count (expireIdle). 0 disables it. Idleness is read
	// from the circuit's cell counters every JoinedIdleTimeout/4, so a
	// circuit goes between JoinedIdleTimeout and 1.25 times it after its
	// last cell. Keep it above the pool's MaxTimeInactive: origins replace
	// their idle circuits first.
	JoinedIdleTimeout time.Duration
	// CircWindow/CircIncrement and StreamWindow/StreamIncrement are the
	// SENDME windows in cells (Tor: 1000/100 and 500/50). Both ends of a
	// circuit must agree on them: they are protocol constants, settable
	// for tests and benchmarks (doubling them measured no faster here).
	CircWindow, CircIncrement     int
	StreamWindow, StreamIncrement int
	// ExitStartCells is how many cells an exit stream sends before the
	// origin's first stream SENDME; after it, the whole StreamWindow
	// applies (0: the whole window from the start). A response that
	// starts with a full window in flight has its first cell queued in
	// every hop behind the rest of the window's work on a busy node; a
	// smaller first flight, as Tor's congestion control starts with 124
	// cells, lets its head through first, at the cost of one round trip
	// for longer responses. At least StreamIncrement (the origin's first
	// SENDME comes after that many cells), at most StreamWindow.
	ExitStartCells int
	// ExitHeadStart is how long an exit stream waits, once the first
	// cell of a response (its head: an HTTP status line and headers) is
	// queued alone, before it reads the rest from the destination (0:
	// it only yields the processor). Where the next hops share the
	// exit's cores (nodes on one machine, as in a testnet), the rest
	// would otherwise take the cores the head needs to cross them: Go
	// runs a goroutine woken by the network only when a processor has
	// nothing else to run. On separate machines it delays the rest of a
	// response once, by this much or, on an otherwise idle node, about a
	// millisecond (Go's timers then wake at that granularity), and costs
	// no CPU.
	ExitHeadStart time.Duration
	// MaxStreams bounds the streams open on one circuit at either end
	// (at most 32767, the IDs one end numbers its streams with).
	MaxStreams int
	// MaxRelayEarly bounds RELAY_EARLY cells per circuit (Tor: 8), so
	// circuits are at most MaxRelayEarly+1 hops.
	MaxRelayEarly int
	// ExtendTimeout bounds dialing the next hop for an EXTEND2.
	ExtendTimeout time.Duration
	// QueueCells bounds the cells queued for one circuit's goroutine; a
	// peer that overruns it (it must have ignored the windows) gets its
	// circuit destroyed with RESOURCELIMIT.
	QueueCells int
	// ExitPolicy, on a node with FlagExit, decides which destinations a
	// BEGIN "HOST:PORT" may open a TCP connection to (no registered
	// service of that name taking precedence), each address a name
	// resolves to checked. Nil: none; veil is not an exit unless told so.
	// exitpolicy.Policy.Allows is the one veil runs with.
	ExitPolicy func(netip.AddrPort) bool
	// ExitResolve resolves the names of exit streams at this exit (nil:
	// the system resolver). Tests set it so that no name leaves the
	// machine.
	ExitResolve func(ctx context.Context, host string) ([]netip.Addr, error)
	// Rand feeds the handshakes (nil: crypto/rand).
	Rand io.Reader
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// OnEvent, if set, receives circuit events synchronously; it must not block.
	OnEvent func(Event)

	// The budgets below bound what hostile peers can make this node hold
	// (docs/ARCHITECTURE.md, "Budgets and limits"); budget.go enforces them.

	// MaxQueuedBytes is the node-wide budget of cells queued in circuits:
	// in relayed circuits' queues and in streams' receive queues, counted
	// at QueuedCellCost bytes a cell. When it is exceeded, the circuits
	// whose backlog has made no progress for the longest are destroyed
	// (RESOURCELIMIT) until it holds again, as Tor's out-of-memory handler
	// does.
	MaxQueuedBytes int
	// MaxCircuitQueuedCells bounds the cells queued in all the streams of
	// a circuit of others together; the circuit is destroyed
	// (RESOURCELIMIT) when a cell on a stream its origin opened would go
	// beyond it. Stream windows alone would allow MaxJoinedStreams times
	// StreamWindow. The circuit window is consumed as cells arrive (so
	// that one slow stream does not stall its siblings), so an honest
	// peer with a few busy streams and slow readers may have more than
	// one circuit window queued: the default, four windows (~2 MB),
	// leaves it room (at one window, 16 echo streams of 20-65 KB tripped
	// it on a loaded machine), and the node-wide MaxQueuedBytes bounds
	// what all circuits hold together.
	MaxCircuitQueuedCells int
	// MaxJoinedStreams is MaxStreams for the streams the origin of a
	// circuit of others opens at this node: each costs a goroutine.
	MaxJoinedStreams int
	// AllowPrivateExtend lets EXTEND2 name loopback, private, link-local
	// and other non-global addresses (GlobalAddr). Off, such an EXTEND2 is
	// answered with TRUNCATED at once and nothing is dialed, so nobody can
	// make this node probe its owner's network. Only test networks on
	// one machine turn it on.
	AllowPrivateExtend bool
	// MaxExtendDials bounds the dials for EXTEND2 running at once, and
	// MaxExtendDialsPerLink those for circuits that came on one link, so
	// that one peer extending to blackholes cannot take every slot; an
	// EXTEND2 beyond either gets TRUNCATED (RESOURCELIMIT) at once.
	MaxExtendDials        int
	MaxExtendDialsPerLink int
	// CreateRate and CreateBurst are the token bucket of CREATE2 cells on
	// one link (per second, and the most at once): each costs an X25519
	// handshake; a CREATE2 beyond it is answered with DESTROY
	// RESOURCELIMIT before any key agreement.
	CreateRate  float64
	CreateBurst int
}

// DefaultSwitchConfig returns the settings veil runs with.
func DefaultSwitchConfig() SwitchConfig {
	return SwitchConfig{
		Flags:             proto.FlagRelay,
		MaxJoinedCircuits: 1000,
		MaxJoinedPerLink:  64,
		JoinedIdleTimeout: 5 * time.Minute,
		CircWindow:        onion.CircWindowStart,
		CircIncrement:     onion.CircWindowIncrement,
		StreamWindow:      onion.StreamWindowStart,
		StreamIncrement:   onion.StreamWindowIncrement,
		ExitStartCells:    2 * onion.StreamWindowIncrement,
		ExitHeadStart:     200 * time.Microsecond,
		MaxStreams:        256,
		MaxRelayEarly:     8,
		ExtendTimeout:     10 * time.Second,
		QueueCells:        2*onion.CircWindowStart + 512,
		Now:               time.Now,
		// 32 MiB of queued cells: a tenth of a 256 MB router, which also
		// runs the stores, links' buffers and the goroutines.
		MaxQueuedBytes: 32 << 20,
		// Four circuit windows (~2.3 MB): an honest origin with a dozen
		// busy streams to a slow reader stays under it; stream windows
		// alone would allow 64 x 500 cells.
		MaxCircuitQueuedCells: 4 * onion.CircWindowStart,
		MaxJoinedStreams:      64,
		MaxExtendDials:        64,
		MaxExtendDialsPerLink: 8,
		CreateRate:            20,
		CreateBurst:           64,
	}
}

// Validate reports the first setting that cannot work, naming it.
func (c SwitchConfig) Validate() error {
	win := func(name string, start, inc int) error {
		if inc <= 0 || start < inc || start%inc != 0 {
			return fmt.Errorf("circuits: switch config: %s %d/+%d must be a positive multiple of its increment", name, start, inc)
		}
		return nil
	}
	if err := win("CircWindow", c.CircWindow, c.CircIncrement); err != nil {
		return err
	}
	if err := win("StreamWindow", c.StreamWindow, c.StreamIncrement); err != nil {
		return err
	}
	switch {
	case c.ExitStartCells != 0 && (c.ExitStartCells < c.StreamIncrement || c.ExitStartCells > c.StreamWindow):
		return fmt.Errorf("circuits: switch config: ExitStartCells %d must be 0 or in %d..%d (StreamIncrement..StreamWindow)", c.ExitStartCells, c.StreamIncrement, c.StreamWindow)
	case c.ExitHeadStart < 0 || c.ExitHeadStart > maxExitHeadStart:
		return fmt.Errorf("circuits: switch config: ExitHeadStart %v must be in 0..%v", c.ExitHeadStart, maxExitHeadStart)
	case c.MaxJoinedCircuits < 0:
		return fmt.Errorf("circuits: switch config: MaxJoinedCircuits %d must not be negative", c.MaxJoinedCircuits)
	case c.MaxJoinedPerLink < 1:
		return fmt.Errorf("circuits: switch config: MaxJoinedPerLink %d must be at least 1", c.MaxJoinedPerLink)
	case c.JoinedIdleTimeout < 0:
		return fmt.Errorf("circuits: switch config: JoinedIdleTimeout %v must not be negative (0 disables it)", c.JoinedIdleTimeout)
	case c.MaxStreams < 1 || c.MaxStreams >= lastHopStreams:
		// Each end numbers its streams in half the ID space: beyond it,
		// opening a stream would search forever for a free ID.
		return fmt.Errorf("circuits: switch config: MaxStreams %d must be in 1..%d", c.MaxStreams, lastHopStreams-1)
	case c.MaxRelayEarly < 1:
		return fmt.Errorf("circuits: switch config: MaxRelayEarly %d must be at least 1", c.MaxRelayEarly)
	case c.ExtendTimeout <= 0:
		return fmt.Errorf("circuits: switch config: ExtendTimeout %v must be positive", c.ExtendTimeout)
	case c.QueueCells < 2*c.CircWindow+64:
		return fmt.Errorf("circuits: switch config: QueueCells %d must hold both circuit windows plus control cells (%d)", c.QueueCells, 2*c.CircWindow+64)
	case c.Now == nil:
		return errors.New("circuits: switch config: Now must be set")
	case c.MaxQueuedBytes < 64*QueuedCellCost:
		return fmt.Errorf("circuits: switch config: MaxQueuedBytes %d must hold at least 64 cells (%d)", c.MaxQueuedBytes, 64*QueuedCellCost)
	case c.MaxCircuitQueuedCells < c.StreamWindow:
		return fmt.Errorf("circuits: switch config: MaxCircuitQueuedCells %d must hold a stream window (%d)", c.MaxCircuitQueuedCells, c.StreamWindow)
	case c.MaxJoinedStreams < 1 || c.MaxJoinedStreams >= lastHopStreams:
		return fmt.Errorf("circuits: switch config: MaxJoinedStreams %d must be in 1..%d", c.MaxJoinedStreams, lastHopStreams-1)
	case c.MaxExtendDials < 1 || c.MaxExtendDialsPerLink < 1:
		return fmt.Errorf("circuits: switch config: MaxExtendDials %d and MaxExtendDialsPerLink %d must be at least 1", c.MaxExtendDials, c.MaxExtendDialsPerLink)
	case c.CreateRate <= 0 || c.CreateBurst < 1:
		return fmt.Errorf("circuits: switch config: CreateRate %v and CreateBurst %d must be positive", c.CreateRate, c.CreateBurst)
	}
	return nil
}

// Switch errors.
var (
	ErrSwitchClosed = errors.New("circuits: switch closed")
	ErrDestroyed    = errors.New("circuits: circuit destroyed")
)

// circKey names a circuit on one link.
type circKey struct {
	l  link.Conn
	id uint32
}

// circuitQueue is what the link handlers hand cells to: an origin Circuit
// (its inbox implements it) or a relayCirc (its relayQueue), each with one
// goroutine at a time that owns its state.
type circuitQueue interface {
	// deliver queues it without blocking; false means the queue is full.
	deliver(it inbound) bool
	// kill asks the circuit's goroutine to tear it down.
	kill(reason proto.DestroyReason)
}

// inbound is one input of a circuit goroutine: a cell that arrived on l, or
// (c == nil) the news that l closed.
type inbound struct {
	l link.Conn
	c *proto.Cell
}

// inbox is a circuit goroutine's input from other goroutines: the cells
// and link closures the handlers queue (at most QueueCells; the queue owns
// a cell until the goroutine takes it) and the latest kill request.
type inbox struct {
	in    chan inbound
	killc chan proto.DestroyReason
}

func newInbox(cells int) inbox {
	return inbox{in: make(chan inbound, cells), killc: make(chan proto.DestroyReason, 1)}
}

func (q *inbox) deliver(it inbound) bool {
	select {
	case q.in <- it:
		return true
	default:
		return false
	}
}

func (q *inbox) kill(reason proto.DestroyReason) {
	select {
	case q.killc <- reason:
	default: // a kill is pending already: the circuit is going
	}
}

// drain releases the cells still queued; the circuit's goroutine calls it
// once the circuit is unregistered. A handler that looked the circuit up
// just before may still queue a cell afterwards: that one is left to the
// garbage collector instead of the pool.
func (q *inbox) drain() {
	for {
		select {
		case it := <-q.in:
			if it.c != nil {
				proto.PutCell(it.c)
			}
		default:
			return
		}
	}
}

// Switch is a node's circuit switch: it answers CREATE2, relays the cells
// of circuits others build through this node, ends circuits at services,
// and builds our own (origin) circuits; the package doc describes the
// roles, the goroutine per circuit, the queues and the flow control. Wire
// it to a link.Links with link.Handlers{Cell: sw.HandleCell, Closed:
// sw.HandleClosed}. Safe for concurrent use.
type Switch struct {
	id    *Identity
	links link.Dialer
	cfg   SwitchConfig

	mu       sync.RWMutex // guards the fields below; read-locked per cell to find its circuit
	circs    map[circKey]circuitQueue
	joined   int
	perLink  map[link.Conn]int // joined circuits by the link their CREATE2 came on
	reaping  bool              // the idle reaper (reapIdle) runs
	services map[string]Service
	hooks    []func(Event)
	rng      *rand.Rand
	closed   bool

	nextHandle uint64 // guarded by mu
	wg         sync.WaitGroup
	stop       chan struct{} // closed by Close

	budget budget // the memory budget, CREATE2 buckets and extend dials (budget.go)

	// yield lets a stream's reader run (runtime.Gosched); headStart
	// gives an exit response's head its lead (ExitHeadStart). Tests
	// watch them. Set before the switch carries cells, then fixed.
	yield, headStart func()
}

// maxExitHeadStart bounds ExitHeadStart: the head's lead is a matter of
// microseconds; more would only delay responses.
const maxExitHeadStart = 10 * time.Millisecond

// NewSwitch returns the circuit switch of the node id, dialing through lg
// (a *link.Links, or linktest's in-memory network).
func NewSwitch(id *Identity, lg link.Dialer, cfg SwitchConfig) (*Switch, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rng, err := seededRand(cfg.Rand)
	if err != nil {
		return nil, fmt.Errorf("circuits: seeding the switch: %w", err)
	}
	sw := &Switch{
		id:       id,
		links:    lg,
		cfg:      cfg,
		circs:    make(map[circKey]circuitQueue),
		perLink:  make(map[link.Conn]int),
		services: make(map[string]Service),
		rng:      rng,
		stop:     make(chan struct{}),
		yield:    runtime.Gosched,
	}
	sw.headStart = runtime.Gosched
	if d := cfg.ExitHeadStart; d > 0 {
		sw.headStart = func() { time.Sleep(d) }
	}
	sw.budget.init(cfg)
	return sw, nil
}

// Config returns the switch's configuration.
func (sw *Switch) Config() SwitchConfig { return sw.cfg }

// ID is this node's ID.
func (sw *Switch) ID() proto.NodeID { return sw.id.ID }

// Handle registers svc for streams whose BEGIN names dest.
func (sw *Switch) Handle(dest string, svc Service) {
	sw.mu.Lock()
	sw.services[dest] = svc
	sw.mu.Unlock()
}

// Joined is the number of circuits of others this node carries now.
func (sw *Switch) Joined() int {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	return sw.joined
}

func (sw *Switch) subscribe(f func(Event)) {
	sw.mu.Lock()
	sw.hooks = append(sw.hooks, f)
	sw.mu.Unlock()
}

func (sw *Switch) emit(ev Event) {
	ev.At = sw.cfg.Now()
	sw.mu.Lock()
	hooks := sw.hooks
	sw.mu.Unlock()
	if sw.cfg.OnEvent != nil {
		sw.cfg.OnEvent(ev)
	}
	for _, h := range hooks {
		h(ev)
	}
}

func (sw *Switch) handle() uint64 {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	sw.nextHandle++
	return sw.nextHandle
}

// HandleCell is the link.Handlers.Cell of the node's links. It takes
// ownership of c and never blocks on another link: cells go to their
// circuit's queue.
func (sw *Switch) HandleCell(l link.Conn, c *proto.Cell) {
	switch c.Command() {
	case proto.CmdPadding:
		proto.PutCell(c)
		return
	case proto.CmdCreate2:
		sw.handleCreate(l, c)
		return
	}
	sw.mu.RLock()
	q := sw.circs[circKey{l, c.CircID()}]
	sw.mu.RUnlock()
	if q == nil {
		proto.PutCell(c) // unknown circuit (or one just torn down): drop
		return
	}
	if !q.deliver(inbound{l: l, c: c}) {
		proto.PutCell(c)
		q.kill(proto.DestroyResourceLimit)
		sw.wakeSenders() // it may be stuck on a full link (budget.go)
		return
	}
	sw.cellQueued()
}

// HandleClosed is the link.Handlers.Closed of the node's links: every
// circuit on l learns that the link is gone (why does not matter to them).
func (sw *Switch) HandleClosed(l link.Conn, _ error) {
	sw.mu.Lock()
	var qs []circuitQueue
	for k, q := range sw.circs {
		if k.l == l {
			qs = append(qs, q)
		}
	}
	sw.mu.Unlock()
	sw.budget.forgetLink(l)
	for _, q := range qs {
		if !q.deliver(inbound{l: l}) {
			q.kill(proto.DestroyChannelClosed)
		}
	}
}

// sendDestroy sends DESTROY without blocking (dropped if the link's queue is
// full: the peer is then far behind, and will learn when the link closes).
func sendDestroy(l link.Conn, id uint32, reason proto.DestroyReason) {
	c := proto.GetCell()
	c.SetCircID(id)
	c.SetCommand(proto.CmdDestroy)
	c.Payload()[0] = byte(reason)
	_ = l.TrySendCell(c)
}

func (sw *Switch) acceptsCircuits() bool {
	return sw.cfg.Flags&(proto.FlagRelay|proto.FlagORDB|proto.FlagExit|proto.FlagFacilitator) != 0
}

func (sw *Switch) handleCreate(l link.Conn, c *proto.Cell) {
	id := c.CircID()
	key := circKey{l, id}
	sw.mu.Lock()
	switch {
	case sw.closed:
		sw.mu.Unlock()
		proto.PutCell(c)
		sendDestroy(l, id, proto.DestroyHibernating)
		return
	case sw.circs[key] != nil || id == 0:
		sw.mu.Unlock()
		proto.PutCell(c) // a peer reusing a live ID: refuse, keep the old circuit
		return
	case (id>>31 == 1) != l.Inbound():
		sw.mu.Unlock()
		proto.PutCell(c) // an ID from our half of the space: it could collide with ours
		sendDestroy(l, id, proto.DestroyProtocol)
		return
	case !sw.acceptsCircuits() || sw.joined >= sw.cfg.MaxJoinedCircuits ||
		sw.perLink[l] >= sw.cfg.MaxJoinedPerLink || !sw.budget.allowCreate(l, sw.cfg.Now()):
		sw.mu.Unlock()
		proto.PutCell(c)
		sendDestroy(l, id, proto.DestroyResourceLimit)
		return
	}
	sw.joined++
	sw.perLink[l]++
	sw.nextHandle++
	rc := &relayCirc{
		sw:        sw,
		handle:    sw.nextHandle,
		prev:      l,
		prevID:    id,
		q:         relayQueue{max: sw.cfg.QueueCells, running: true},
		create:    c,
		idleSince: sw.cfg.Now(),
	}
	rc.runFn = rc.run
	rc.ep.init(sw, false)
	rc.ep.handle = rc.handle
	rc.ep.out, rc.ep.outID = l, id
	sw.circs[key] = rc
	sw.wg.Add(1) // until the circuit's teardown
	if !sw.reaping && sw.cfg.JoinedIdleTimeout > 0 {
		// Started with the first joined circuit: a switch that only builds
		// its own circuits has nothing to reap.
		sw.reaping = true
		sw.wg.Add(1)
		go sw.reapIdle()
	}
	sw.mu.Unlock()
	go rc.runFn() // the queue is marked owned: this run answers the CREATE2
}

// reapIdle calls expireIdle every JoinedIdleTimeout/4 until Close.
func (sw *Switch) reapIdle() {
	defer sw.wg.Done()
	t := time.NewTicker(max(sw.cfg.JoinedIdleTimeout/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-sw.stop:
			return
		case <-t.C:
			sw.expireIdle(sw.cfg.Now())
		}
	}
}

// expireIdle destroys, with DESTROY TIMEOUT towards both neighbours, the
// joined circuits that sent no cell back towards their origin since
// JoinedIdleTimeout before now. As the pool does, it reads the counters
// rather than a clock per cell: a circuit's idle time runs from its
// creation or from the last call that saw its backward count change.
// Only backward cells count as progress (data, answers and SENDMEs from
// the last hop or our streams): cells from the origin alone, a DROP every
// few minutes, keep nothing alive. reapIdle calls it; tests call it with
// chosen times. TIMEOUT rather than FINISHED (what an origin's Close
// sends) tells the origin the relay gave up on it. A circuit that moved
// no cell either way since the last call, not yet expired, loses its
// queue buffers and its cipher state (relayCirc.quiet).
func (sw *Switch) expireIdle(now time.Time) {
	var idle, quiet []*relayCirc
	sw.mu.Lock()
	for k, q := range sw.circs {
		rc, ok := q.(*relayCirc)
		if !ok || k.l != rc.prev || k.id != rc.prevID {
			continue // origin circuits are the pool's; a relayCirc's next-hop key is the same circuit
		}
		// idleCells holds both counts: backward cells in the high half,
		// forward ones in the low half (each wrapping; only equality
		// matters).
		sent, recv := rc.ep.stats.cellsSent.Load(), rc.ep.stats.cellsRecv.Load()
		cells := sent<<32 | recv&0xffffffff
		switch {
		case cells>>32 != rc.idleCells>>32:
			rc.idleCells, rc.idleSince = cells, now
		case now.Sub(rc.idleSince) >= sw.cfg.JoinedIdleTimeout:
			idle = append(idle, rc)
		case cells != rc.idleCells:
			rc.idleCells = cells // forward cells only: busy, but no progress
		default:
			quiet = append(quiet, rc) // quiet since the last look
		}
	}
	sw.mu.Unlock()
	for _, rc := range quiet {
		rc.quiet()
	}
	for _, rc := range idle {
		rc.kill(proto.DestroyTimeout)
	}
}

func (sw *Switch) unregister(l link.Conn, id uint32, q circuitQueue) {
	sw.mu.Lock()
	if sw.circs[circKey{l, id}] == q {
		delete(sw.circs, circKey{l, id})
	}
	sw.mu.Unlock()
}

// allocID picks a free circuit ID on l and reserves it for q. As in Tor,
// the side that dialed the link sets the top bit and the other clears it,
// so the two never pick the same ID.
func (sw *Switch) allocID(l link.Conn, q circuitQueue) (uint32, error) {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.closed {
		return 0, ErrSwitchClosed
	}
	for range 64 {
		id := sw.rng.Uint32() &^ (1 << 31)
		if !l.Inbound() {
			id |= 1 << 31
		}
		if id == 0 || sw.circs[circKey{l, id}] != nil {
			continue
		}
		sw.circs[circKey{l, id}] = q
		return id, nil
	}
	return 0, errors.New("circuits: no free circuit ID on the link")
}

// Close tears down every circuit (sending DESTROY where it can) and waits
// for their goroutines and services. It does not close the Links.
func (sw *Switch) Close() error {
	sw.mu.Lock()
	if sw.closed {
		sw.mu.Unlock()
		sw.wg.Wait()
		return nil
	}
	sw.closed = true
	close(sw.stop)
	var qs []circuitQueue
	for _, q := range sw.circs {
		qs = append(qs, q)
	}
	sw.mu.Unlock()
	for _, q := range qs {
		q.kill(proto.DestroyHibernating)
	}
	sw.wg.Wait()
	return nil
}

// seededRand returns a generator seeded from r (nil: crypto/rand).
func seededRand(r io.Reader) (*rand.Rand, error) {
	var seed [32]byte
	if _, err := io.ReadFull(randOr(r), seed[:]); err != nil {
		return nil, err
	}
	return rand.New(rand.NewChaCha8(seed)), nil
}

func randOr(r io.Reader) io.Reader {
	if r == nil {
		return cryptoRand{}
	}
	return r
}
