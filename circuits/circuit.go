package circuits

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"veil/circuits/link"
	"veil/circuits/onion"
	"veil/proto"
)

type cryptoRand struct{}

func (cryptoRand) Read(p []byte) (int, error) { return crand.Read(p) }

// Build errors.
var (
	ErrBuildFailed = errors.New("circuits: circuit build failed")
	// ErrFirstHop wraps a build's failure to reach its first hop (guards.go
	// sets such a guard aside for a while).
	ErrFirstHop    = errors.New("link to first hop")
	ErrTruncated   = errors.New("circuits: circuit truncated")
	ErrPathTooLong = errors.New("circuits: path longer than RELAY_EARLY allows")
)

// An origin circuit is two parts, as a relayed one is (see relayed.go):
//
// originCore, the protocol: a pure state machine that takes the cells the
// first hop sends us, the link's end, kills, and the owner's requests to
// add a hop or truncate, with the time, and hands out actions: send
// CREATE2 to the first hop, send a relay control cell to a hop, add or cut
// hops of the path the endpoint seals with, deliver a recognised cell to
// the streams, BEGIN, answer a request, end the circuit. It keeps its own
// copy of the path to open backward cells with (the backward half of each
// Hop is touched by the circuit's goroutine only; senders seal forward
// under the endpoint's sendMu).
//
// Circuit, the shell: the goroutine (run) that feeds the core and executes
// its actions, and the methods (Build, Extend, Truncate, OpenStream) that
// other goroutines call.

// originEventKind is what happened to an origin circuit.
type originEventKind uint8

const (
	// oevCell: cell c arrived from the first hop (the core then owns it).
	oevCell originEventKind = iota + 1
	// oevLinkClosed: the link to the first hop is gone.
	oevLinkClosed
	// oevSendFailed: a send to the first hop failed (the link is going).
	oevSendFailed
	// oevKill: end the circuit with reason, DESTROY to the first hop.
	oevKill
	// oevExtend: add a hop with handshake hs (its CREATE2 body create),
	// the node next at addr (unused for the first hop); answer on reply.
	oevExtend
	// oevTruncate: keep the first keep hops; answer on reply.
	oevTruncate
)

// originEvent is one input of originCore.handle.
type originEvent struct {
	kind   originEventKind
	c      *proto.Cell
	reason proto.DestroyReason
	hs     *onion.ClientHandshake
	create proto.Create2
	next   proto.NodeID
	addr   netip.AddrPort
	keep   int
	reply  chan error // buffered: the shell never waits on it
}

// originActionKind is what the shell must do.
type originActionKind uint8

const (
	// oactCreate: send cell c (CREATE2) to the first hop.
	oactCreate originActionKind = iota + 1
	// oactControl: seal relay command cmd with data for hop target
	// (RELAY_EARLY if early) and send it; a failure is oevSendFailed.
	oactControl
	// oactAddHop: hop joins the end of the path senders seal with.
	oactAddHop
	// oactCutHops: the path keeps its first n hops; the last hop's
	// streams and windows start over.
	oactCutHops
	// oactDeliver: recognised stream-family relay cell c (parsed as
	// relay, GMAC tag tag) is the endpoint's.
	oactDeliver
	// oactBegin: the last hop opens stream stream to our service dest.
	oactBegin
	// oactReply: send err (nil: done) on reply.
	oactReply
	// oactClose: the circuit is over with reason; DESTROY the first hop
	// if destroy.
	oactClose
)

// originAction is one output of originCore.
type originAction struct {
	kind    originActionKind
	c       *proto.Cell
	target  int
	early   bool
	cmd     proto.RelayCommand
	data    []byte
	hop     *onion.Hop
	n       int
	relay   proto.RelayCell
	tag     onion.Tag
	stream  uint16
	dest    string
	reply   chan error
	err     error
	reason  proto.DestroyReason
	destroy bool
}

// errBusy answers a request while another hop is being added or cut.
var errBusy = errors.New("circuits: circuit busy extending")

// originCore is the protocol state of an origin circuit (see above). Not
// safe for concurrent use: its shell's goroutine owns it.
type originCore struct {
	outID uint32
	hops  []*onion.Hop // the path built so far, for opening backward cells

	pending      *onion.ClientHandshake // the hop being added, if any
	pendingReply chan error
	truncTo      int // hops to keep after a TRUNCATE we sent; 0: none
	truncReply   chan error

	done    bool
	reason  proto.DestroyReason
	destroy bool // the end sends DESTROY to the first hop
	acts    []originAction
}

func newOriginCore(outID uint32) *originCore {
	return &originCore{outID: outID, acts: make([]originAction, 0, 8)}
}

// ready returns the actions of the last calls and forgets them; the slice
// is reused by the next call.
func (oc *originCore) ready() []originAction {
	a := oc.acts
	oc.acts = oc.acts[:0]
	return a
}

func (oc *originCore) emit(a originAction) { oc.acts = append(oc.acts, a) }

func (oc *originCore) reply(ch chan error, err error) {
	oc.emit(originAction{kind: oactReply, reply: ch, err: err})
}

// handle takes one input at time now.
func (oc *originCore) handle(ev originEvent, now time.Time) {
	if oc.done {
		if ev.c != nil {
			proto.PutCell(ev.c)
		}
		if ev.reply != nil {
			oc.reply(ev.reply, fmt.Errorf("%w (%v)", ErrDestroyed, oc.reason))
		}
		return
	}
	switch ev.kind {
	case oevCell:
		oc.cell(ev.c)
	case oevLinkClosed, oevSendFailed:
		oc.end(proto.DestroyChannelClosed, false)
	case oevKill:
		oc.end(ev.reason, true)
	case oevExtend:
		oc.extend(ev)
	case oevTruncate:
		oc.truncate(ev)
	}
}

// end finishes the circuit and fails what waits on it.
func (oc *originCore) end(reason proto.DestroyReason, destroy bool) {
	err := fmt.Errorf("%w (%v)", ErrDestroyed, reason)
	if oc.pendingReply != nil {
		oc.reply(oc.pendingReply, err)
	}
	if oc.truncReply != nil {
		oc.reply(oc.truncReply, err)
	}
	oc.pending, oc.pendingReply, oc.truncTo, oc.truncReply = nil, nil, 0, nil
	oc.done, oc.reason, oc.destroy = true, reason, destroy
	oc.emit(originAction{kind: oactClose, reason: reason, destroy: destroy})
}

func (oc *originCore) busy() bool { return oc.pending != nil || oc.truncReply != nil }

// extend starts adding a hop: CREATE2 for the first, EXTEND2 through the
// last hop for the others.
func (oc *originCore) extend(ev originEvent) {
	if oc.busy() {
		oc.reply(ev.reply, errBusy)
		return
	}
	oc.pending, oc.pendingReply = ev.hs, ev.reply
	if len(oc.hops) == 0 {
		c := proto.GetCell()
		c.SetCircID(oc.outID)
		c.SetCommand(proto.CmdCreate2)
		ev.create.Append(c.Payload()[:0])
		oc.emit(originAction{kind: oactCreate, c: c})
		return
	}
	ext := proto.Extend2{Next: ev.next, Addr: ev.addr, Create: ev.create}
	oc.emit(originAction{kind: oactControl, target: len(oc.hops) - 1, early: true, cmd: proto.RelayExtend2, data: ext.Append(make([]byte, 0, ext.Len()))})
}

// truncate asks hop keep-1 to cut the circuit after it.
func (oc *originCore) truncate(ev originEvent) {
	switch {
	case ev.keep < 1 || ev.keep >= len(oc.hops):
		oc.reply(ev.reply, fmt.Errorf("circuits: cannot truncate %d hops to %d", len(oc.hops), ev.keep))
		return
	case oc.busy():
		oc.reply(ev.reply, errBusy)
		return
	}
	oc.truncTo, oc.truncReply = ev.keep, ev.reply
	oc.emit(originAction{kind: oactControl, target: ev.keep - 1, cmd: proto.RelayTruncate})
}

// finish completes the pending handshake with the server's answer; a bad
// or unexpected answer ends the circuit.
func (oc *originCore) finish(body proto.Created2) {
	hs, reply := oc.pending, oc.pendingReply
	oc.pending, oc.pendingReply = nil, nil
	if hs == nil {
		oc.end(proto.DestroyProtocol, true)
		return
	}
	km, err := hs.Finish(body)
	if err != nil {
		oc.reply(reply, err)
		oc.end(proto.DestroyProtocol, true)
		return
	}
	h := onion.NewHop(&km)
	clear(km[:])
	oc.hops = append(oc.hops, h)
	oc.emit(originAction{kind: oactAddHop, hop: h})
	oc.reply(reply, nil)
}

func (oc *originCore) cell(c *proto.Cell) {
	switch c.Command() {
	case proto.CmdDestroy:
		r, _ := proto.ParseDestroy(c.Payload())
		proto.PutCell(c)
		oc.end(r, false)
		return
	case proto.CmdCreated2:
		body, err := proto.ParseCreated2(c.Payload())
		if err == nil {
			body.HData = bytes.Clone(body.HData) // the cell goes back to the pool
		}
		proto.PutCell(c)
		if err != nil || len(oc.hops) != 0 {
			oc.end(proto.DestroyProtocol, true)
			return
		}
		oc.finish(body)
		return
	case proto.CmdRelay:
	default: // RELAY_EARLY backward, CREATE2 on our ID, ...
		proto.PutCell(c)
		oc.end(proto.DestroyProtocol, true)
		return
	}
	hop, t, ok := onion.OpenBackward(oc.hops, c.PayloadArray())
	if !ok {
		proto.PutCell(c)
		oc.end(proto.DestroyProtocol, true) // modified, dropped, reordered or forged
		return
	}
	r, err := proto.ParseRelay(c.Payload())
	if err != nil {
		proto.PutCell(c)
		oc.end(proto.DestroyProtocol, true)
		return
	}
	last := len(oc.hops) - 1
	switch {
	case r.Command == proto.RelayExtended2:
		body, err := proto.ParseCreated2(r.Data)
		if err == nil {
			body.HData = bytes.Clone(body.HData)
		}
		proto.PutCell(c)
		if err != nil || hop != last {
			oc.end(proto.DestroyProtocol, true)
			return
		}
		oc.finish(body)
	case r.Command == proto.RelayTruncated:
		end, _ := proto.ParseEnd(r.Data) // malformed: reason 0, none given
		why := proto.DestroyReason(end.Reason)
		proto.PutCell(c)
		switch {
		case oc.truncReply != nil && oc.truncTo == hop+1:
			oc.hops = oc.hops[:hop+1]
			oc.emit(originAction{kind: oactCutHops, n: hop + 1})
			oc.reply(oc.truncReply, nil)
			oc.truncTo, oc.truncReply = 0, nil
		case oc.pending != nil && hop == last:
			// The extend we asked for failed at the last hop.
			oc.reply(oc.pendingReply, fmt.Errorf("%w: %v", ErrTruncated, why))
			oc.pending, oc.pendingReply = nil, nil
		default:
			// Part of a built circuit went away: the circuit is broken.
			oc.end(why, true)
		}
	case hop != last:
		proto.PutCell(c)
		oc.end(proto.DestroyProtocol, true) // streams live at the last hop only
	case r.Command == proto.RelayBegin:
		b, err := proto.ParseBegin(r.Data)
		sid := r.StreamID
		proto.PutCell(c)
		// The last hop numbers its streams from lastHopStreams up.
		if err != nil || sid < lastHopStreams {
			oc.end(proto.DestroyProtocol, true)
			return
		}
		oc.emit(originAction{kind: oactBegin, stream: sid, dest: b.Dest})
	case streamFamily(r.Command):
		oc.emit(originAction{kind: oactDeliver, c: c, relay: r, tag: t})
	default:
		proto.PutCell(c)
		oc.end(proto.DestroyProtocol, true)
	}
}

// Circuit is an origin circuit: one we built, through a path of hops, to
// open streams at its last hop. One goroutine owns its receive side and
// its originCore; its methods are safe for concurrent use.
type Circuit struct {
	ep     endpoint
	handle uint64
	first  link.Conn
	inbox
	reqs  chan originEvent // Extend and Truncate requests to run
	ended chan struct{}    // closed when run has returned
	born  time.Time
	core  *originCore // owned by run

	mu   sync.Mutex // guards path
	path []proto.NodeDescriptor
}

// ID is the circuit's local handle (as in events); it never goes on the wire.
func (c *Circuit) ID() uint64 { return c.handle }

// Path returns the descriptors of the hops built so far. The hop count is
// read under sendMu, the lock the circuit's goroutine changes the hops
// under, and not under mu, which guards the descriptors only.
func (c *Circuit) Path() []proto.NodeDescriptor {
	n := c.Hops()
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]proto.NodeDescriptor(nil), c.path[:min(n, len(c.path))]...)
}

func (c *Circuit) pathIDs() []proto.NodeID {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := make([]proto.NodeID, 0, len(c.path))
	for _, d := range c.path {
		ids = append(ids, d.ID)
	}
	return ids
}

// Hops is the number of hops built.
func (c *Circuit) Hops() int {
	c.ep.sendMu.Lock()
	defer c.ep.sendMu.Unlock()
	return len(c.ep.hops)
}

// Done is closed when the circuit is closed.
func (c *Circuit) Done() <-chan struct{} { return c.ep.done }

// Reason says why a closed circuit closed (DestroyNone while open).
func (c *Circuit) Reason() proto.DestroyReason {
	c.ep.mu.Lock()
	defer c.ep.mu.Unlock()
	return c.ep.reason
}

// Stats returns the cells and bytes that crossed the circuit so far.
func (c *Circuit) Stats() CircuitStats { return c.ep.stats.snapshot() }

// Born is when the circuit's build started.
func (c *Circuit) Born() time.Time { return c.born }

// OpenStream opens a stream to the service dest at the circuit's last hop
// and waits for it to accept.
func (c *Circuit) OpenStream(ctx context.Context, dest string) (*Stream, error) {
	return c.ep.openStream(ctx, dest)
}

// BeginStream opens a stream to dest without waiting for the last hop's
// answer (Tor's optimistic data): what is written to the stream follows
// BEGIN at once. With lazy > 0, BEGIN itself waits for the first Write,
// whose data then goes right behind it, or for lazy at most; with 0 it
// is sent before BeginStream returns. A refusal shows as the stream's
// end: Read returns io.EOF, Write io.ErrClosedPipe. It is for
// destinations the last hop is known to reach; OpenStream reports
// refusals.
func (c *Circuit) BeginStream(dest string, lazy time.Duration) (*Stream, error) {
	return c.ep.beginStream(dest, lazy, nil)
}

// Close destroys the circuit (DESTROY FINISHED to the first hop) and waits
// for its goroutine. Idempotent.
func (c *Circuit) Close() error {
	c.kill(proto.DestroyFinished)
	<-c.ended
	return nil
}

// Build builds a circuit through path (first hop first), telescoping one
// hop at a time, and returns it once every hop answered. Each descriptor
// must verify (its signature binds the onion key the handshake
// authenticates). ctx bounds the
// whole build; on failure the partial circuit is destroyed.
func (sw *Switch) Build(ctx context.Context, path []proto.NodeDescriptor) (*Circuit, error) {
	if len(path) == 0 {
		return nil, fmt.Errorf("%w: empty path", ErrBuildFailed)
	}
	if len(path) > sw.cfg.MaxRelayEarly+1 {
		return nil, ErrPathTooLong
	}
	c := &Circuit{
		handle: sw.handle(),
		inbox:  newInbox(sw.cfg.QueueCells),
		reqs:   make(chan originEvent),
		ended:  make(chan struct{}),
		born:   sw.cfg.Now(),
		path:   append([]proto.NodeDescriptor(nil), path...),
	}
	c.ep.init(sw, true)
	c.ep.handle = c.handle
	sw.emit(Event{Kind: EventLaunched, Circuit: c.handle, Origin: true, Path: c.pathIDs()})
	fail := func(err error) (*Circuit, error) {
		err = fmt.Errorf("%w: %w", ErrBuildFailed, err)
		sw.emit(Event{Kind: EventFailed, Circuit: c.handle, Origin: true, Path: c.pathIDs(), Hops: c.Hops(), Err: err})
		return nil, err
	}

	addr, err := pickAddr(path[0])
	if err != nil {
		return fail(err)
	}
	l, err := sw.links.Dial(ctx, path[0].ID, addr)
	if err != nil {
		return fail(fmt.Errorf("%w: %w", ErrFirstHop, err))
	}
	id, err := sw.allocID(l, c)
	if err != nil {
		return fail(err)
	}
	c.first = l
	c.ep.out, c.ep.outID = l, id
	c.core = newOriginCore(id)
	sw.mu.Lock()
	sw.wg.Add(1)
	sw.mu.Unlock()
	go c.run()

	for i, d := range path {
		if err := VerifyDescriptor(d, sw.cfg.Now()); err != nil {
			c.kill(proto.DestroyFinished)
			<-c.ended
			return fail(fmt.Errorf("hop %d (%s): descriptor: %w", i+1, d.ID.Short(), err))
		}
		if err := c.addHop(ctx, i, d); err != nil {
			c.kill(proto.DestroyFinished)
			<-c.ended
			return fail(fmt.Errorf("hop %d (%s): %w", i+1, d.ID.Short(), err))
		}
		sw.emit(Event{Kind: EventExtended, Circuit: c.handle, Origin: true, Path: c.pathIDs()[:i+1], Hops: i + 1})
	}
	sw.emit(Event{Kind: EventBuilt, Circuit: c.handle, Origin: true, Path: c.pathIDs(), Hops: len(path)})
	return c, nil
}

func pickAddr(d proto.NodeDescriptor) (string, error) {
	for _, a := range d.Addrs {
		if a.IsValid() {
			return a.String(), nil
		}
	}
	return "", fmt.Errorf("node %s has no address", d.ID.Short())
}

// addHop adds hop i, the node d: run sends CREATE2 (first hop) or EXTEND2
// through the last hop, and answers when the hop's reply came.
func (c *Circuit) addHop(ctx context.Context, i int, d proto.NodeDescriptor) error {
	sw := c.ep.sw
	hs, create, err := onion.NewClientHandshake(sw.cfg.Rand, d.ID, d.OnionKey)
	if err != nil {
		return err
	}
	ev := originEvent{kind: oevExtend, hs: hs, create: create, next: d.ID}
	if i > 0 {
		ap, ok := firstAddr(d)
		if !ok {
			return fmt.Errorf("node %s has no address", d.ID.Short())
		}
		ev.addr = ap
	}
	return c.request(ctx, ev)
}

// request hands ev (an Extend or Truncate) to run and waits for its answer.
func (c *Circuit) request(ctx context.Context, ev originEvent) error {
	ev.reply = make(chan error, 1)
	select {
	case c.reqs <- ev:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.ended:
		return fmt.Errorf("%w (%v)", ErrDestroyed, c.Reason())
	}
	select {
	case err := <-ev.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-c.ep.done:
		return fmt.Errorf("%w (%v)", ErrDestroyed, c.Reason())
	}
}

// Truncate keeps the first keep hops and tears down the rest (TRUNCATE to
// hop keep). The circuit can then be extended again with Extend.
func (c *Circuit) Truncate(ctx context.Context, keep int) error {
	if n := c.Hops(); keep < 1 || keep >= n {
		return fmt.Errorf("circuits: cannot truncate %d hops to %d", n, keep)
	}
	err := c.request(ctx, originEvent{kind: oevTruncate, keep: keep})
	if errors.Is(err, ErrDestroyed) {
		return ErrCircuitClosed
	}
	return err
}

// Extend adds hop d (a descriptor that verifies) at the end of a built
// circuit.
func (c *Circuit) Extend(ctx context.Context, d proto.NodeDescriptor) error {
	if err := VerifyDescriptor(d, c.ep.sw.cfg.Now()); err != nil {
		return fmt.Errorf("circuits: descriptor of %s: %w", d.ID.Short(), err)
	}
	n := c.Hops()
	if n+1 > c.ep.sw.cfg.MaxRelayEarly+1 {
		return ErrPathTooLong
	}
	c.mu.Lock()
	c.path = append(c.path[:n], d)
	c.mu.Unlock()
	if err := c.addHop(ctx, n, d); err != nil {
		return err
	}
	c.ep.sw.emit(Event{Kind: EventExtended, Circuit: c.handle, Origin: true, Path: c.pathIDs(), Hops: n + 1})
	return nil
}

// run owns the circuit's receive side and its core until it closes.
func (c *Circuit) run() {
	sw := c.ep.sw
	defer sw.wg.Done()
	defer close(c.ended)
	now := sw.cfg.Now // read once per wake-up, as relayCirc.loop does
	for !c.core.done {
		select {
		case it := <-c.in:
			t := now()
			c.input(it, t)
			for n := len(c.in); !c.core.done && n > 0; n-- {
				c.input(<-c.in, t) // what else is queued, without a full select
			}
		case ev := <-c.reqs:
			c.step(ev, now())
		case r := <-c.killc:
			c.step(originEvent{kind: oevKill, reason: r}, now())
		case <-sw.stop:
			c.step(originEvent{kind: oevKill, reason: proto.DestroyHibernating}, now())
		}
	}
	c.teardown()
}

func (c *Circuit) input(it inbound, now time.Time) {
	if it.c == nil {
		c.step(originEvent{kind: oevLinkClosed}, now)
		return
	}
	if it.c.Command() == proto.CmdRelay {
		c.ep.stats.recv(0)
	}
	c.step(originEvent{kind: oevCell, c: it.c}, now)
}

// step feeds one event to the core and executes what it asks; an action
// that fails becomes an event, handled once the batch is done.
func (c *Circuit) step(ev originEvent, now time.Time) {
	c.core.handle(ev, now)
	for {
		var follow originEvent
		acts := c.core.ready()
		for i := range acts {
			if f := c.do(&acts[i]); f.kind != 0 && follow.kind == 0 {
				follow = f
			}
		}
		if follow.kind == 0 {
			return
		}
		c.core.handle(follow, now)
	}
}

// do executes one action; it returns the event its failure makes, if any.
func (c *Circuit) do(a *originAction) originEvent {
	e := &c.ep
	switch a.kind {
	case oactCreate:
		e.sendMu.Lock()
		err := c.first.SendCell(a.c)
		e.sendMu.Unlock()
		if err != nil {
			return originEvent{kind: oevSendFailed}
		}
	case oactControl:
		if err := e.sendControl(a.target, a.early, a.cmd, 0, a.data); err != nil {
			return originEvent{kind: oevSendFailed}
		}
	case oactAddHop:
		e.sendMu.Lock()
		e.hops = append(e.hops, a.hop)
		e.sendMu.Unlock()
	case oactCutHops:
		e.sendMu.Lock()
		e.hops = e.hops[:a.n]
		e.newLastHop()
		e.sendMu.Unlock()
	case oactDeliver:
		res, handled := e.onStreamCell(a.relay, a.c, a.tag)
		if !res.keep {
			proto.PutCell(a.c)
		}
		switch {
		case !handled:
			return originEvent{kind: oevKill, reason: proto.DestroyProtocol}
		case res.destroy != 0:
			return originEvent{kind: oevKill, reason: res.destroy}
		}
		e.stats.bytesRecv.Add(uint64(a.relay.Length))
	case oactBegin:
		e.begin(a.stream, a.dest)
	case oactReply:
		a.reply <- a.err
	case oactClose:
		// teardown, once run sees the core done; DESTROY there.
	}
	return originEvent{}
}

func (c *Circuit) teardown() {
	sw := c.ep.sw
	reason := c.core.reason
	sw.unregister(c.first, c.ep.outID, c)
	if c.core.destroy {
		sendDestroy(c.first, c.ep.outID, reason)
	}
	c.ep.close(reason)
	c.drain() // what the handlers queued before they saw us go
	sw.emit(Event{Kind: EventClosed, Circuit: c.handle, Origin: true, Path: c.pathIDs(), Hops: len(c.ep.hops), Reason: reason, Stats: c.ep.stats.snapshot()})
}
