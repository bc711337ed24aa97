package ordb

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"veil/chunkstore"
	"veil/proto"
)

// RelayConfig sets up a Relay. Start from DefaultRelayConfig.
type RelayConfig struct {
	// Core tunes the decision logic (Core.Self must be the node's ID).
	Core Config
	// Seeds is the node's SERVED store: what its user published or chose
	// to seed. Never the fetch cache. Nil: the ORDB only relays.
	Seeds *chunkstore.Store
	// DHT looks up and stores provider records; nil: no lookups (queries
	// with no listed reference end UNAVAILABLE).
	DHT DHT
	// Builder builds circuits to ORDBs the DHT names; nil: none.
	Builder CircuitBuilder
	// Facilitator is the node's own F flag, put in its provider records.
	Facilitator bool
	// Facilitators fetches from BitTorrent when lists and DHT failed;
	// nil: such queries end UNAVAILABLE. Core.Facilitators must be on too.
	Facilitators Facilitators

	MaxConns    int           // streams served at once; more are closed at once
	MaxForwards int           // forwarded requests in flight (each has a goroutine)
	MaxOps      int           // DHT operations and circuit builds in flight
	QueueMsgs   int           // messages queued towards one stream; past it the stream is closed
	IdleStreams int           // forward streams kept open for reuse, per circuit
	OpTimeout   time.Duration // bounds opening a stream, a build, a STORE
	Events      int           // inputs waiting for Run; senders wait past it
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// DefaultRelayConfig returns the settings a node runs with; Core.Self is
// left to the caller.
func DefaultRelayConfig() RelayConfig {
	c := DefaultConfig()
	c.Facilitators = false
	return RelayConfig{
		Core: c, MaxConns: 1024, MaxForwards: 1024, MaxOps: 32, QueueMsgs: 512,
		IdleStreams: 8, OpTimeout: 20 * time.Second, Events: 1024,
	}
}

// Validate reports the first bad setting.
func (c RelayConfig) Validate() error {
	if err := c.Core.Validate(); err != nil {
		return err
	}
	if c.MaxConns < 1 || c.MaxForwards < 1 || c.MaxOps < 1 || c.QueueMsgs < 8 || c.IdleStreams < 0 || c.OpTimeout <= 0 || c.Events < 1 {
		return fmt.Errorf("%w: relay bounds must be positive (QueueMsgs >= 8)", ErrBadConfig)
	}
	return nil
}

// ErrRelayClosed is returned by Run after Close, and by Serve on a closed
// Relay.
var ErrRelayClosed = errors.New("ordb: relay closed")

// RelayStats counts what a Relay did, for status pages and tests.
type RelayStats struct {
	Queries, Forwards, Delivered, Ends, LocalServes, Lookups, Connects, Stores, Announces int64

	Dropped int64 // streams closed for breaking the protocol or overrunning a queue
	Opened  int64 // forward streams opened (the others were reused)
}

// Relay is the ORDB service: the goroutine shell that runs a Core over
// circuit streams. Run owns the Core and every table below; the streams'
// goroutines only read, parse and write, and pass what they parsed to Run
// over one bounded channel of inputs. Safe for concurrent use.
//
// Each stream that reaches the ORDB service (Serve) is one CircuitID: a
// requester's, a holder's (it sent DB_INFO: queries for its content go
// back along its circuit to PeerDest) or a neighbour ORDB's (it sent
// DB_ANNOUNCE: queries go back to its ORDBDest). A circuit built by
// Connect is one more, with a control stream carrying announcements.
// Forwarded queries travel on streams of their own, one request at a
// time, kept for reuse when the answer ended cleanly. Answers reach a
// requester's stream in the order of its queries, as Fetch expects.
type Relay struct {
	cfg  RelayConfig
	core *Core

	in     chan input
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
	runs   atomic.Bool
	opsSem chan struct{}
	wg     sync.WaitGroup // stream and worker goroutines

	// Owned by Run.
	conns   map[CircuitID]*conn
	dirty   map[*conn]bool // requester streams with answers to write out
	fwds    map[uint64]*fwd
	nextID  CircuitID
	later   []func(time.Time)
	nconns  atomic.Int64
	nfwds   int
	stats   RelayStats
	statsMu sync.Mutex // guards shared, a copy of stats for Stats
	shared  RelayStats

	// tamper, set by tests before Run, changes what is delivered to
	// requesters: an ORDB that corrupts data in transit.
	tamper func(proto.DBMessage) proto.DBMessage
}

type connKind uint8

const (
	kindUnknown   connKind = iota // a requester, so far
	kindHolder                    // sent DB_INFO / DB_STREAM_INFO
	kindNeighbour                 // sent DB_ANNOUNCE, or built by Connect
)

// conn is one stream reaching the ORDB, or the control stream of a
// circuit it built. Fields below mc are owned by Run.
type conn struct {
	id   CircuitID
	s    CellStream
	mc   *msgConn
	back func(ctx context.Context, dest string) (CellStream, error)
	circ ORDBCircuit // built by Connect, else nil
	out  chan proto.DBMessage

	kind   connKind
	closed bool
	order  []*upReq // this stream's queries, oldest first, answered in that order
	idle   []CellStream
}

// upReq is a requester's query as the shell tracks it to keep answers in
// order.
type upReq struct {
	q       proto.DBQuery
	msgs    []proto.DBMessage
	done    bool
	live    uint64
	hasLive bool
}

// fwd is one forwarded request's worker.
type fwd struct {
	id   uint64
	down CircuitID
	mu   sync.Mutex // guards s and cancelled
	s    CellStream
	canc bool
}

// NewRelay returns a Relay; call Run, and register Serve (through
// FromCircuitStream) as the switch's ORDBDest service.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var seeds Seeds
	if cfg.Seeds != nil {
		seeds = storeSeeds{cfg.Seeds}
	}
	core, err := NewCore(cfg.Core, seeds)
	if err != nil {
		return nil, err
	}
	return &Relay{
		cfg: cfg, core: core,
		in:     make(chan input, cfg.Events),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		opsSem: make(chan struct{}, cfg.MaxOps),
		conns:  make(map[CircuitID]*conn),
		dirty:  make(map[*conn]bool),
		fwds:   make(map[uint64]*fwd),
	}, nil
}

// storeSeeds answers Core's Seeds from a chunkstore.
type storeSeeds struct{ st *chunkstore.Store }

func (s storeSeeds) Has(name proto.HashName, first uint32, n uint16) bool {
	d, err := s.st.Descriptor(name)
	if err != nil {
		return false
	}
	if n == 0 {
		return true
	}
	if d.Flags&proto.FlagLive != 0 {
		return false // live runs are served by holders, not from here
	}
	have, err := s.st.Have(name)
	if err != nil {
		return false
	}
	w := uint64(first) / 64
	return w < uint64(len(have)) && have[w]&(1<<(uint64(first)%64)) != 0
}

// input is one thing for Run to do. all: the Core may end requests
// without an action for them (see sweep).
type input struct {
	run func(now time.Time)
	all bool
}

// post hands f to Run; it waits while the input queue is full, and drops
// f once the Relay is closed.
func (r *Relay) post(f func(now time.Time)) { r.send(input{run: f}) }

// postEnd is post for inputs after which the Core may have ended
// requests silently: a stream or a forward that ended.
func (r *Relay) postEnd(f func(now time.Time)) { r.send(input{run: f, all: true}) }

func (r *Relay) send(in input) {
	select {
	case r.in <- in:
	case <-r.stop:
	}
}

// Stats returns a snapshot of the counters (updated as Run goes).
func (r *Relay) Stats() RelayStats {
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	return r.shared
}

// Refs returns the Core's lists for h (see Core.Refs), read by Run; nil
// when the Relay is not running.
func (r *Relay) Refs(h proto.HashName) (files, streams []RefInfo) {
	done := make(chan struct{})
	select {
	case r.in <- input{run: func(time.Time) { files, streams = r.core.Refs(h); close(done) }}:
	case <-r.stop:
		return nil, nil
	}
	select {
	case <-done:
	case <-r.done:
	}
	return files, streams
}

// Close stops Run, closes every stream and circuit and waits for their
// goroutines. Idempotent.
func (r *Relay) Close() error {
	r.once.Do(func() { close(r.stop) })
	if r.runs.CompareAndSwap(false, true) {
		close(r.done) // Run never ran; it will not now
	} else {
		<-r.done
	}
	r.wg.Wait()
	return nil
}

// Run owns the Core until ctx ends or Close; it returns nil then.
func (r *Relay) Run(ctx context.Context) error {
	if !r.runs.CompareAndSwap(false, true) {
		return errors.New("ordb: relay already running")
	}
	defer close(r.done)
	defer r.shutdown()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		r.armTimer(timer)
		select {
		case <-ctx.Done():
			return nil
		case <-r.stop:
			return nil
		case f := <-r.in:
			r.step(f.run, f.all)
		case <-timer.C:
			r.step(func(now time.Time) { r.core.Tick(now) }, true)
		}
	}
}

func (r *Relay) armTimer(t *time.Timer) {
	t.Stop()
	d := time.Hour
	if dl := r.core.NextDeadline(); !dl.IsZero() {
		d = max(dl.Sub(r.cfg.Now()), 0)
	}
	t.Reset(d)
}

// shutdown closes everything Run owns.
func (r *Relay) shutdown() {
	r.once.Do(func() { close(r.stop) })
	for _, c := range r.conns {
		r.closeConn(c)
	}
	for _, f := range r.fwds {
		f.cancel()
	}
}

// step runs one input, then carries out the Core's actions (and the
// inputs they lead to) until none is left.
func (r *Relay) step(f func(time.Time), all bool) {
	now := r.cfg.Now()
	f(now)
	for {
		acts := r.core.Ready()
		later := r.later
		r.later = nil
		if len(acts) == 0 && len(later) == 0 {
			break
		}
		for _, a := range acts {
			r.do(a, now)
		}
		for _, g := range later {
			g(now)
		}
	}
	r.sweep(all)
	r.statsMu.Lock()
	r.shared = r.stats
	r.statsMu.Unlock()
}

// Serve runs the ORDB side of one stream that reached the ORDB service,
// until it ends. It closes s.
func (r *Relay) Serve(s InStream) {
	select {
	case <-r.stop:
		s.Close()
		return
	default:
	}
	if r.nconns.Add(1) > int64(r.cfg.MaxConns) {
		r.nconns.Add(-1)
		s.Close()
		return
	}
	defer r.nconns.Add(-1)
	c := &conn{s: s, mc: newMsgConn(s), back: s.OpenBack, out: make(chan proto.DBMessage, r.cfg.QueueMsgs)}
	c.mc.Asm.Max = proto.DBFirstFrameData // what reaches an ORDB fits one cell
	registered := make(chan bool, 1)
	r.post(func(time.Time) {
		r.nextID++
		c.id = r.nextID
		r.conns[c.id] = c
		registered <- true
	})
	select {
	case <-registered:
	case <-r.stop:
		s.Close()
		return
	}
	r.runConn(c)
}

// runConn reads c's stream until it ends, with a writer beside it.
func (r *Relay) runConn(c *conn) {
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		for m := range c.out {
			if err := c.mc.send(m); err != nil {
				c.s.Close()
				for range c.out {
				}
				return
			}
		}
	}()
	err := r.readConn(c)
	c.s.Close()
	r.postEnd(func(now time.Time) {
		if err != nil && errors.Is(err, ErrProtocol) {
			r.stats.Dropped++
		}
		r.connGone(c, now)
	})
	// The writer ends when Run closes c.out (connGone or shutdown).
	select {
	case <-wdone:
	case <-r.done:
		<-wdone
	}
}

// readConn parses what arrives on c and hands it to Run.
func (r *Relay) readConn(c *conn) error {
	for {
		cmd, raw, err := c.mc.recv()
		if err != nil {
			return err
		}
		m, err := proto.ParseDB(cmd, raw)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		// The messages read here hold no slices (their strings are copies).
		switch m := m.(type) {
		case proto.DBQuery:
			r.post(func(now time.Time) { r.query(c, m, now) })
		case proto.DBInfo:
			r.post(func(now time.Time) { r.info(c, m, now) })
		case proto.DBStreamInfo:
			r.post(func(now time.Time) { r.streamInfo(c, m, now) })
		case proto.DBAnnounce:
			r.post(func(now time.Time) { r.announce(c, m, now) })
		case proto.DBEnd:
			return nil // the requester is done with this stream
		default:
			return fmt.Errorf("%w: %v on an ORDB stream", ErrProtocol, cmd)
		}
	}
}

// kill closes a stream that broke the protocol or overran its queue; its
// reader then reports it gone.
func (r *Relay) kill(c *conn) {
	r.stats.Dropped++
	c.s.Close()
}

func (r *Relay) query(c *conn, q proto.DBQuery, now time.Time) {
	if c.closed {
		return
	}
	r.stats.Queries++
	active := 0
	for _, u := range c.order {
		if !u.done {
			active++
			if u.q.RequestID == q.RequestID {
				r.kill(c) // two live queries under one ID: answers could not be told apart
				return
			}
		}
	}
	if active >= r.cfg.Core.MaxPendingPerCircuit+8 {
		r.kill(c)
		return
	}
	c.order = append(c.order, &upReq{q: q})
	r.core.HandleQuery(c.id, q, now)
}

func (r *Relay) info(c *conn, m proto.DBInfo, now time.Time) {
	if c.closed || !r.setKind(c, kindHolder) {
		return
	}
	_ = r.core.HandleInfo(c.id, m, now)
}

func (r *Relay) streamInfo(c *conn, m proto.DBStreamInfo, now time.Time) {
	if c.closed || !r.setKind(c, kindHolder) {
		return
	}
	_ = r.core.HandleStreamInfo(c.id, StreamInfo{HashName: m.HashName, First: m.First, Last: m.Last, Type: m.Type}, now)
}

func (r *Relay) announce(c *conn, m proto.DBAnnounce, now time.Time) {
	if c.closed || !r.setKind(c, kindNeighbour) {
		return
	}
	r.core.AddNeighbour(c.id, now)
	_ = r.core.HandleAnnounce(c.id, Announce{HashName: m.HashName, Size: m.Size, Type: m.Type, Live: m.Live}, now)
}

// setKind fixes what sits behind c: a stream is a holder's or a
// neighbour ORDB's, never both (queries go back to different services).
func (r *Relay) setKind(c *conn, k connKind) bool {
	if c.kind == kindUnknown {
		c.kind = k
	}
	if c.kind != k {
		r.kill(c)
		return false
	}
	return true
}

// connGone forgets c: its requests are cancelled, its references die.
func (r *Relay) connGone(c *conn, now time.Time) {
	if r.conns[c.id] != c {
		return
	}
	r.closeConn(c)
	delete(r.conns, c.id)
	r.core.CircuitClosed(c.id, now)
}

func (r *Relay) closeConn(c *conn) {
	if c.closed {
		return
	}
	c.closed = true
	close(c.out)
	c.s.Close()
	for _, s := range c.idle {
		s.Close()
	}
	c.idle = nil
	if c.circ != nil {
		c.circ.Close()
	}
}

// do carries out one action.
func (r *Relay) do(a Action, now time.Time) {
	switch a := a.(type) {
	case ServeLocal:
		// Read here, on Run: one bbolt read of at most DefaultMaxChunks
		// chunks and their proof. Simple, but it holds Run up while it
		// reads; an ORDB serving much from its own store should move it
		// to a worker that posts the messages back (not measured yet).
		r.stats.LocalServes++
		if u := r.upReqFor(a.Circuit, a.Query.RequestID); u != nil {
			msgs := localAnswer(r.cfg.Seeds, a.Query)
			if d, ok := msgs[len(msgs)-1].(proto.DBConnected); ok && d.Flags&proto.FlagLive != 0 {
				// A live stream served from here starts its requester two
				// windows behind the newest chunk this node holds.
				if h, err := r.cfg.Seeds.Head(a.Query.HashName); err == nil {
					start := h.Length - min(h.Length, 2*r.cfg.Core.WindowChunks)
					u.msgs = append(u.msgs, proto.DBLiveStart{Chunk: start})
				}
			}
			u.msgs = append(u.msgs, msgs...)
			u.done = true
			r.dirty[r.conns[a.Circuit]] = true
		}
	case Forward:
		r.forward(a, now)
	case Deliver:
		r.stats.Delivered++
		if r.tamper != nil {
			a.Msg = r.tamper(a.Msg)
		}
		r.deliver(a)
	case SendEnd:
		r.sendEnd(a)
	case Lookup:
		r.lookup(a)
	case Connect:
		r.connect(a)
	case Store:
		r.store(a)
	case AskFacilitator:
		r.askFacilitator(a)
	case Propagate:
		if c := r.conns[a.To]; c != nil && !c.closed {
			r.stats.Announces++
			r.push(c, proto.DBAnnounce{HashName: a.HashName, Size: a.Size, Type: a.Type, Live: a.Live})
		}
	}
}

// upReqFor finds the oldest unanswered query id on circuit up.
func (r *Relay) upReqFor(up CircuitID, id uint64) *upReq {
	c := r.conns[up]
	if c == nil || c.closed {
		return nil
	}
	for _, u := range c.order {
		if !u.done && u.q.RequestID == id {
			return u
		}
	}
	return nil
}

func (r *Relay) deliver(a Deliver) {
	u := r.upReqFor(a.Circuit, a.RequestID)
	if u == nil {
		return
	}
	r.dirty[r.conns[a.Circuit]] = true
	switch m := a.Msg.(type) {
	case proto.DBConnected:
		if u.hasLive && m.Flags&proto.FlagLive != 0 {
			u.msgs = append(u.msgs, proto.DBLiveStart{Chunk: u.live})
		}
		u.done = true
	case proto.DBData:
		u.done = uint64(m.Chunk)+uint64(m.NbChunks()) >= uint64(u.q.Chunk)+uint64(u.q.NbChunks)
	}
	u.msgs = append(u.msgs, a.Msg)
}

func (r *Relay) sendEnd(a SendEnd) {
	r.stats.Ends++
	if f := r.fwds[a.RequestID]; f != nil && f.down == a.Circuit {
		f.cancel() // downstream: stop, the stream is not reused
		return
	}
	if u := r.upReqFor(a.Circuit, a.RequestID); u != nil {
		u.msgs = append(u.msgs, proto.DBEnd{Reason: a.Reason})
		u.done = true
		r.dirty[r.conns[a.Circuit]] = true
	}
}

// sweep writes out, for every requester stream, the answers that are due
// in query order, and marks done the queries the Core no longer relays.
//
// Only the streams an answer went to are looked at, except after a step
// in which the Core may have ended requests without a word (a tick, a
// circuit or a forward that ended): then every stream is.
func (r *Relay) sweep(all bool) {
	set := r.dirty
	if all {
		set = make(map[*conn]bool, len(r.conns))
		for _, c := range r.conns {
			set[c] = true
		}
	}
	defer clear(r.dirty)
	for c := range set {
		if c.closed || len(c.order) == 0 {
			continue
		}
		for _, u := range c.order {
			if !u.done {
				if _, ok := r.core.pending[u.q.RequestID]; !ok {
					u.done = true // the Core ended it (after a partial answer)
				}
			}
		}
		n := 0
		for _, u := range c.order {
			for _, m := range u.msgs {
				if !r.push(c, m) {
					return
				}
			}
			u.msgs = nil
			if !u.done {
				break
			}
			n++
		}
		c.order = c.order[n:]
	}
}

// push queues m towards c's stream; a stream whose reader lags past
// QueueMsgs is closed rather than let it hold the Relay up.
func (r *Relay) push(c *conn, m proto.DBMessage) bool {
	if c.closed {
		return false
	}
	select {
	case c.out <- m:
		return true
	default:
		r.kill(c)
		return false
	}
}

// destFor is where a forwarded query goes on c's circuit.
func destFor(c *conn) string {
	if c.kind == kindHolder {
		return PeerDest
	}
	return ORDBDest
}

func (r *Relay) forward(a Forward, now time.Time) {
	id := a.Query.RequestID
	if a.HasLiveStart {
		if p := r.core.pending[id]; p != nil {
			if u := r.upReqFor(p.up, id); u != nil {
				u.live, u.hasLive = a.LiveStart, true
			}
		}
	}
	c := r.conns[a.Circuit]
	if c == nil || c.closed || r.nfwds >= r.cfg.MaxForwards {
		down := a.Circuit
		r.later = append(r.later, func(now time.Time) { _ = r.core.HandleEnd(down, id, proto.DBEndDestroyed, now) })
		return
	}
	r.stats.Forwards++
	f := &fwd{id: id, down: a.Circuit}
	if old := r.fwds[id]; old != nil {
		old.cancel()
	}
	r.fwds[id] = f
	r.nfwds++
	var s CellStream
	if n := len(c.idle); n > 0 {
		s, c.idle = c.idle[n-1], c.idle[:n-1]
	}
	if s == nil {
		r.stats.Opened++
	}
	back, dest := c.back, destFor(c)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.runForward(f, s, back, dest, a.Query)
	}()
}

func (f *fwd) cancel() {
	f.mu.Lock()
	f.canc = true
	s := f.s
	f.mu.Unlock()
	if s != nil {
		s.Close()
	}
}

// runForward sends q on a stream of its own (s, or a new one) and hands
// what comes back to Run, until the answer is complete or ends.
func (r *Relay) runForward(f *fwd, s CellStream, back func(context.Context, string) (CellStream, error), dest string, q proto.DBQuery) {
	if s == nil {
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.OpTimeout)
		go func() {
			select {
			case <-ctx.Done():
			case <-r.stop:
				cancel()
			}
		}()
		var err error
		s, err = back(ctx, dest)
		cancel()
		if err != nil {
			r.postEnd(func(now time.Time) {
				r.fwdDone(f, nil, now)
				_ = r.core.HandleEnd(f.down, f.id, proto.DBEndDestroyed, now)
			})
			return
		}
	}
	f.mu.Lock()
	f.s = s
	canc := f.canc
	f.mu.Unlock()
	if canc {
		s.Close()
		r.postEnd(func(now time.Time) { r.fwdDone(f, nil, now) })
		return
	}
	mc := newMsgConn(s)
	reusable, reason, ended, err := r.relayAnswer(f, mc, q)
	if err != nil {
		s.Close()
		r.postEnd(func(now time.Time) {
			r.fwdDone(f, nil, now)
			_ = r.core.HandleEnd(f.down, f.id, proto.DBEndDestroyed, now)
		})
		return
	}
	if !reusable {
		s.Close()
		s = nil
	}
	r.postEnd(func(now time.Time) {
		r.fwdDone(f, s, now)
		if ended {
			_ = r.core.HandleEnd(f.down, f.id, reason, now)
		}
	})
}

// relayAnswer reads the answer to q from downstream and posts each
// message. It returns whether the stream may carry another query, and
// the DB_END that ended the answer, if one did.
func (r *Relay) relayAnswer(f *fwd, mc *msgConn, q proto.DBQuery) (reusable bool, reason proto.DBEndReason, ended bool, err error) {
	if err := mc.send(q); err != nil {
		return false, 0, false, err
	}
	return r.readAnswer(f, mc, q)
}

// readAnswer reads and posts the answer to q (see relayAnswer).
func (r *Relay) readAnswer(f *fwd, mc *msgConn, q proto.DBQuery) (reusable bool, reason proto.DBEndReason, ended bool, err error) {
	next, want := uint64(q.Chunk), uint64(q.Chunk)+uint64(q.NbChunks)
	for {
		cmd, raw, err := mc.recv()
		if err != nil {
			return false, 0, false, err
		}
		m, err := proto.ParseDB(cmd, clone(raw)) // delivered later: its own bytes
		if err != nil {
			return false, 0, false, fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		switch m := m.(type) {
		case proto.DBEnd:
			return true, m.Reason, true, nil
		case proto.DBLiveStart:
			// This ORDB tells its requester where to start when it knows
			// the stream itself (OR_streams_P, Forward.LiveStart); when it
			// does not, it passes on what the ORDB it asked said (posted
			// before the descriptor, which delivers it).
			id, start := f.id, m.Chunk
			r.post(func(time.Time) {
				if p := r.core.pending[id]; p != nil {
					if u := r.upReqFor(p.up, id); u != nil && !u.hasLive {
						u.live, u.hasLive = start, true
					}
				}
			})
			continue
		case proto.DBConnected, proto.DBProof:
		case proto.DBData:
			next = uint64(m.Chunk) + uint64(m.NbChunks())
		default:
			return false, 0, false, fmt.Errorf("%w: %v in an answer", ErrProtocol, cmd)
		}
		r.post(func(now time.Time) { _ = r.core.HandleAnswer(f.down, f.id, m, now) })
		if _, ok := m.(proto.DBConnected); ok || (cmd == proto.RelayDBData && next >= want) {
			return true, 0, false, nil
		}
	}
}

// fwdDone forgets f; a clean stream goes back to its circuit's idle list.
func (r *Relay) fwdDone(f *fwd, s CellStream, now time.Time) {
	if r.fwds[f.id] == f {
		delete(r.fwds, f.id)
	}
	r.nfwds--
	if s == nil {
		return
	}
	f.mu.Lock()
	canc := f.canc
	f.mu.Unlock()
	c := r.conns[f.down]
	if canc || c == nil || c.closed || len(c.idle) >= r.cfg.IdleStreams {
		s.Close()
		return
	}
	c.idle = append(c.idle, s)
}

// op runs g in a goroutine bounded by MaxOps; it reports false (and does
// not run g) when MaxOps are already in flight.
func (r *Relay) op(g func(ctx context.Context)) bool {
	select {
	case r.opsSem <- struct{}{}:
	default:
		return false
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer func() { <-r.opsSem }()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-ctx.Done():
			case <-r.stop:
				cancel()
			}
		}()
		g(ctx)
	}()
	return true
}

func (r *Relay) lookup(a Lookup) {
	h := a.HashName
	fail := func(now time.Time) { _ = r.core.HandleLookup(h, nil, true, now) }
	if r.cfg.DHT == nil {
		r.later = append(r.later, fail)
		return
	}
	r.stats.Lookups++
	ok := r.op(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, r.cfg.Core.LookupTimeout)
		defer cancel()
		res, err := r.cfg.DHT.FindValue(ctx, h)
		if err != nil {
			r.post(fail)
			return
		}
		r.post(func(now time.Time) { _ = r.core.HandleLookup(h, res.Records, true, now) })
	})
	if !ok {
		r.later = append(r.later, fail)
	}
}

func (r *Relay) store(a Store) {
	if r.cfg.DHT == nil {
		return
	}
	r.stats.Stores++
	r.op(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, r.cfg.OpTimeout)
		defer cancel()
		_, _ = r.cfg.DHT.Provide(ctx, a.HashName, a.P, r.cfg.Facilitator)
	})
}

func (r *Relay) connect(a Connect) {
	prov := a.Provider.ORDB
	fail := func(now time.Time) { _ = r.core.HandleConnect(prov, 0, false, now) }
	if r.cfg.Builder == nil {
		r.later = append(r.later, fail)
		return
	}
	r.stats.Connects++
	rec := a.Provider
	ok := r.op(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, r.cfg.Core.ConnectTimeout)
		defer cancel()
		circ, err := r.cfg.Builder.BuildTo(ctx, rec)
		if err != nil {
			r.post(fail)
			return
		}
		s, err := circ.OpenStream(ctx)
		if err != nil {
			circ.Close()
			r.post(fail)
			return
		}
		r.post(func(now time.Time) { r.connected(prov, circ, s, now) })
	})
	if !ok {
		r.later = append(r.later, fail)
	}
}

// connected registers the circuit Connect built, with its control stream.
func (r *Relay) connected(prov proto.NodeID, circ ORDBCircuit, s CellStream, now time.Time) {
	select {
	case <-r.stop:
		s.Close()
		circ.Close()
		return
	default:
	}
	r.nextID++
	c := &conn{id: r.nextID, s: s, mc: newMsgConn(s), circ: circ, kind: kindNeighbour,
		back: func(ctx context.Context, _ string) (CellStream, error) { return circ.OpenStream(ctx) },
		out:  make(chan proto.DBMessage, r.cfg.QueueMsgs)}
	c.mc.Asm.Max = proto.DBFirstFrameData
	if err := r.core.HandleConnect(prov, c.id, true, now); err != nil {
		s.Close()
		circ.Close()
		return
	}
	r.conns[c.id] = c
	r.wg.Add(2)
	go func() {
		defer r.wg.Done()
		r.runConn(c)
	}()
	go func() {
		defer r.wg.Done()
		select {
		case <-circ.Done():
			s.Close() // the reader then reports the conn gone
		case <-r.stop:
		}
	}()
}

// askFacilitator hands the query to the facilitator service; its answers
// come on a stream of their own, read like a forwarded request's.
func (r *Relay) askFacilitator(a AskFacilitator) {
	q := a.Query
	fail := func(now time.Time) { _ = r.core.HandleFacilitator(q.RequestID, 0, false, now) }
	if r.cfg.Facilitators == nil {
		r.later = append(r.later, fail)
		return
	}
	ok := r.op(func(ctx context.Context) {
		octx, cancel := context.WithTimeout(ctx, r.cfg.OpTimeout)
		s, err := r.cfg.Facilitators.Ask(octx, q)
		cancel()
		if err != nil {
			r.post(fail)
			return
		}
		r.post(func(now time.Time) { r.facilitatorUp(q, s, now) })
	})
	if !ok {
		r.later = append(r.later, fail)
	}
}

// facilitatorUp starts reading the facilitators' answers to q from s.
func (r *Relay) facilitatorUp(q proto.DBQuery, s CellStream, now time.Time) {
	r.nextID++
	id := r.nextID
	if err := r.core.HandleFacilitator(q.RequestID, id, true, now); err != nil {
		s.Close()
		return
	}
	f := &fwd{id: q.RequestID, down: id, s: s}
	r.fwds[q.RequestID] = f
	r.nfwds++
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer s.Close()
		_, reason, ended, err := r.readAnswer(f, newMsgConn(s), q)
		r.postEnd(func(now time.Time) {
			r.fwdDone(f, nil, now)
			switch {
			case err != nil:
				_ = r.core.HandleEnd(f.down, f.id, proto.DBEndDestroyed, now)
			case ended:
				_ = r.core.HandleEnd(f.down, f.id, reason, now)
			}
			r.core.CircuitClosed(id, now)
		})
	}()
}

// localAnswer is the answer to q from the served store, as Server gives
// it: the descriptor, DB_PROOF + DB_DATA runs, or DB_END UNAVAILABLE.
func localAnswer(st *chunkstore.Store, q proto.DBQuery) []proto.DBMessage {
	unavailable := []proto.DBMessage{proto.DBEnd{Reason: proto.DBEndUnavailable}}
	if st == nil {
		return unavailable
	}
	var out []proto.DBMessage
	c := &collectStream{}
	srv := Server{Store: st}
	var bufs serveBufs
	if err := srv.answer(newMsgConn(c), &bufs, q); err != nil {
		return unavailable
	}
	var asm proto.Assembler
	for _, cl := range c.cells {
		cmd, msg, err := asm.Feed(cl.cmd, cl.data)
		if err != nil {
			return unavailable
		}
		if msg != nil {
			m, err := proto.ParseDB(cmd, clone(msg))
			if err != nil {
				return unavailable
			}
			out = append(out, m)
		}
	}
	return out
}

// collectStream is a CellStream that keeps what is written to it.
type collectStream struct{ cells []wcell }

type wcell struct {
	cmd  proto.RelayCommand
	data []byte
}

func (c *collectStream) ReadCell([]byte) (proto.RelayCommand, int, error) {
	return 0, 0, errors.New("ordb: collectStream is write-only")
}
func (c *collectStream) WriteCell(cmd proto.RelayCommand, data []byte) error {
	c.cells = append(c.cells, wcell{cmd, clone(data)})
	return nil
}
func (c *collectStream) Close() error { return nil }
