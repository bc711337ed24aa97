package circuits

import (
	"bytes"
	"context"
	"io"
	"net/netip"
	"time"

	"veil/circuits/link"
	"veil/circuits/onion"
	"veil/proto"
)

// A circuit someone else built through this node is two parts:
//
//	prev (towards the origin) <-> this hop <-> next (towards the last hop)
//
// relayCore, the protocol: a pure state machine. Each input (a cell from
// prev or next, a link gone, a dial finished, a send that failed, a kill)
// goes to handle with the time, and ready hands out what to do: send a
// cell on a link, seal one backward for the origin, deliver a recognised
// cell to the stream endpoint, send DESTROY, start or cancel a dial to the
// next hop, end the circuit. It holds no goroutine, lock or clock, so a
// table test drives it event by event.
//
// relayCirc, the shell: a goroutine per busy circuit that feeds the core
// what arrives and executes its actions on the links, the switch's registry and
// the endpoint (the streams that end here when we are the last hop).
//
// Forward cells arrive from prev; the core removes our layer and either
// consumes them (recognised) or passes them to next. Backward cells arrive
// from next; the shell adds our layer (under the endpoint's sendMu: our own
// streams seal backward with the same keystream) and passes them to prev.

// relayEventKind is what happened to a relayed circuit.
type relayEventKind uint8

const (
	// evCell: cell c arrived on link l (the core then owns it).
	evCell relayEventKind = iota + 1
	// evLinkClosed: link l is gone.
	evLinkClosed
	// evDialed: the dial of generation gen finished: a link l with our
	// circuit ID id on it, or (l == nil) failure with reason.
	evDialed
	// evSendFailed: a blocking send on link l failed (the link is going).
	evSendFailed
	// evKill: the switch ends the circuit with reason (Close, idle reaper,
	// overflowing queue, an endpoint that saw a protocol violation).
	evKill
)

// relayEvent is one input of relayCore.handle.
type relayEvent struct {
	kind   relayEventKind
	l      link.Conn
	c      *proto.Cell
	id     uint32
	gen    uint64
	reason proto.DestroyReason
}

// relayActionKind is what the shell must do.
type relayActionKind uint8

const (
	// actSend: send cell c on link l, blocking while its queue is full; a
	// failure comes back as evSendFailed.
	actSend relayActionKind = iota + 1
	// actSendBack: add our backward layer to relay cell c (already
	// addressed to prev) and send it to prev.
	actSendBack
	// actControl: seal relay command cmd with data for the origin and send
	// it to prev (TRUNCATED, EXTENDED2).
	actControl
	// actDeliver: recognised stream-family relay cell c (parsed as relay,
	// GMAC tag tag) is the endpoint's.
	actDeliver
	// actBegin: the origin opens stream stream to dest here.
	actBegin
	// actDestroy: send DESTROY reason for circuit id on link l without
	// blocking.
	actDestroy
	// actForget: circuit id on link l no longer routes to us.
	actForget
	// actDial: dial node next at addr, giving up at deadline; report it
	// as evDialed with generation gen. The circuit keeps handling cells
	// meanwhile.
	actDial
	// actCancelDial: the dial under way is no longer wanted.
	actCancelDial
	// actClose: the circuit is over with reason (the DESTROYs it needs
	// were actions before this one).
	actClose
)

// relayAction is one output of relayCore.
type relayAction struct {
	kind     relayActionKind
	l        link.Conn
	id       uint32
	c        *proto.Cell
	reason   proto.DestroyReason
	cmd      proto.RelayCommand
	data     []byte
	relay    proto.RelayCell
	tag      onion.Tag
	stream   uint16
	dest     string
	next     proto.NodeID
	addr     netip.AddrPort
	deadline time.Time
	gen      uint64
}

// relayCoreConfig is what a relayCore needs to know of its node.
type relayCoreConfig struct {
	self          proto.NodeID
	relays        bool // the node has FlagRelay: it extends circuits
	maxEarly      int
	extendTimeout time.Duration
}

// relayCore is the protocol state of a circuit we carry (see above). Not
// safe for concurrent use: its shell's goroutine owns it.
type relayCore struct {
	cfg    relayCoreConfig
	prev   link.Conn
	prevID uint32
	hop    *onion.Hop

	next      link.Conn
	nextID    uint32
	dialing   bool          // a dial to the next hop runs (actDial issued)
	dialGen   uint64        // generation of the current or last dial
	create    proto.Create2 // what goes to the next hop once dialed
	extending bool          // CREATE2 sent to next, CREATED2 awaited
	early     int           // RELAY_EARLY cells seen
	done      bool
	reason    proto.DestroyReason

	acts []relayAction
}

func newRelayCore(cfg relayCoreConfig, prev link.Conn, prevID uint32) *relayCore {
	return &relayCore{cfg: cfg, prev: prev, prevID: prevID}
}

// ready returns the actions of the last calls and forgets them; the slice
// is reused by the next call.
func (rc *relayCore) ready() []relayAction {
	a := rc.acts
	rc.acts = rc.acts[:0]
	return a
}

func (rc *relayCore) emit(a relayAction) { rc.acts = append(rc.acts, a) }

// awaitsDial reports whether the dial of generation gen is still wanted
// (the shell then reserves a circuit ID on its link).
func (rc *relayCore) awaitsDial(gen uint64) bool {
	return !rc.done && rc.dialing && rc.dialGen == gen
}

// answerCreate runs the server handshake of the CREATE2 in c (which it
// consumes) with the node's onion keys and randomness rnd, and answers
// CREATED2 to prev; a bad request ends the circuit with PROTOCOL.
func (rc *relayCore) answerCreate(c *proto.Cell, keys onion.ServerKeys, rnd io.Reader) {
	req, err := proto.ParseCreate2(c.Payload())
	if err != nil {
		proto.PutCell(c)
		rc.end(proto.DestroyProtocol, true)
		return
	}
	resp, km, err := onion.ServerHandshake(rnd, rc.cfg.self, keys, req)
	proto.PutCell(c)
	if err != nil {
		rc.end(proto.DestroyProtocol, true)
		return
	}
	rc.hop = onion.NewHop(&km)
	clear(km[:])
	out := proto.GetCell()
	out.SetCircID(rc.prevID)
	out.SetCommand(proto.CmdCreated2)
	resp.Append(out.Payload()[:0])
	rc.emit(relayAction{kind: actSend, l: rc.prev, c: out})
}

// handle takes one input at time now.
func (rc *relayCore) handle(ev relayEvent, now time.Time) {
	if rc.done {
		if ev.c != nil {
			proto.PutCell(ev.c)
		}
		return
	}
	switch ev.kind {
	case evCell:
		rc.cell(ev.l, ev.c, now)
	case evLinkClosed:
		switch ev.l {
		case rc.prev:
			rc.end(proto.DestroyChannelClosed, false)
		case rc.next:
			rc.lostNext(proto.DestroyChannelClosed)
		}
	case evSendFailed:
		switch {
		case ev.l == rc.prev:
			rc.end(proto.DestroyChannelClosed, false)
		case ev.l == rc.next && rc.extending:
			rc.lostNext(proto.DestroyConnectFailed)
		case ev.l == rc.next:
			rc.lostNext(proto.DestroyChannelClosed)
		}
	case evDialed:
		rc.dialed(ev)
	case evKill:
		rc.end(ev.reason, true)
	}
}

// end finishes the circuit: DESTROY reason to next (if any) and, when
// sendPrev, to prev.
func (rc *relayCore) end(reason proto.DestroyReason, sendPrev bool) {
	if rc.dialing {
		rc.dialing = false
		rc.emit(relayAction{kind: actCancelDial})
	}
	if rc.next != nil {
		rc.emit(relayAction{kind: actForget, l: rc.next, id: rc.nextID})
		rc.emit(relayAction{kind: actDestroy, l: rc.next, id: rc.nextID, reason: reason})
		rc.next, rc.nextID = nil, 0
	}
	if sendPrev {
		rc.emit(relayAction{kind: actDestroy, l: rc.prev, id: rc.prevID, reason: reason})
	}
	rc.done, rc.reason = true, reason
	rc.emit(relayAction{kind: actClose, reason: reason})
}

// truncated tells the origin the path after us is gone, with reason.
func (rc *relayCore) truncated(reason proto.DestroyReason) {
	rc.emit(relayAction{kind: actControl, cmd: proto.RelayTruncated, data: reasonBytes[reason:][:1]})
}

// reasonBytes holds every byte value, so a one-byte reason needs no
// allocation.
var reasonBytes = func() (b [256]byte) {
	for i := range b {
		b[i] = byte(i)
	}
	return
}()

// lostNext handles the end of the part of the circuit after us: the origin
// gets TRUNCATED with the reason and may extend again or tear down.
func (rc *relayCore) lostNext(reason proto.DestroyReason) {
	if rc.next != nil {
		rc.emit(relayAction{kind: actForget, l: rc.next, id: rc.nextID})
	}
	if rc.dialing {
		rc.emit(relayAction{kind: actCancelDial})
	}
	rc.next, rc.nextID, rc.extending, rc.dialing = nil, 0, false, false
	rc.truncated(reason)
}

func (rc *relayCore) cell(l link.Conn, c *proto.Cell, now time.Time) {
	fromPrev := l == rc.prev
	if !fromPrev && (l != rc.next || c.CircID() != rc.nextID) {
		// Queued before a TRUNCATE or a lost next hop cut that part of the
		// circuit: the origin no longer has its layers.
		proto.PutCell(c)
		return
	}
	switch cmd := c.Command(); {
	case cmd == proto.CmdDestroy:
		r, _ := proto.ParseDestroy(c.Payload())
		proto.PutCell(c)
		if fromPrev {
			rc.end(r, false)
			return
		}
		rc.lostNext(r)

	case fromPrev && (cmd == proto.CmdRelay || cmd == proto.CmdRelayEarly):
		if cmd == proto.CmdRelayEarly {
			rc.early++
			if rc.early > rc.cfg.maxEarly {
				proto.PutCell(c)
				rc.end(proto.DestroyProtocol, true)
				return
			}
		}
		if t, ok := rc.hop.OpenForward(c.PayloadArray()); ok {
			rc.recognised(c, t, cmd == proto.CmdRelayEarly, now)
			return
		}
		if rc.next == nil || rc.extending {
			proto.PutCell(c) // nobody to pass it to: it was damaged on the way
			rc.end(proto.DestroyProtocol, true)
			return
		}
		c.SetCircID(rc.nextID)
		rc.emit(relayAction{kind: actSend, l: rc.next, c: c})

	case !fromPrev && cmd == proto.CmdRelay:
		c.SetCircID(rc.prevID)
		rc.emit(relayAction{kind: actSendBack, c: c})

	case !fromPrev && cmd == proto.CmdCreated2 && rc.extending:
		body, err := proto.ParseCreated2(c.Payload())
		if err != nil || body.Len() > proto.RelayDataSize {
			proto.PutCell(c)
			rc.lostNext(proto.DestroyProtocol)
			return
		}
		data := body.Append(make([]byte, 0, body.Len()))
		proto.PutCell(c)
		rc.extending = false
		rc.emit(relayAction{kind: actControl, cmd: proto.RelayExtended2, data: data})

	default:
		// CREATED2 from prev, RELAY_EARLY backward, unexpected CREATED2, ...
		proto.PutCell(c)
		rc.end(proto.DestroyProtocol, true)
	}
}

// streamFamily reports whether a recognised relay command is the
// endpoint's (streams and the circuit SENDME).
func streamFamily(cmd proto.RelayCommand) bool {
	switch cmd {
	case proto.RelaySendme, proto.RelayConnected, proto.RelayEnd, proto.RelayDrop:
		return true
	}
	return onion.CountsForFlow(cmd)
}

// recognised handles a relay cell addressed to this hop.
func (rc *relayCore) recognised(c *proto.Cell, t onion.Tag, early bool, now time.Time) {
	r, err := proto.ParseRelay(c.Payload())
	if err != nil {
		proto.PutCell(c)
		rc.end(proto.DestroyProtocol, true)
		return
	}
	switch {
	case r.Command == proto.RelayExtend2:
		ext, err := proto.ParseExtend2(r.Data)
		ext.Create.HData = bytes.Clone(ext.Create.HData) // r.Data dies with c
		proto.PutCell(c)
		if err != nil || !early || rc.next != nil || rc.extending || rc.dialing {
			rc.end(proto.DestroyProtocol, true)
			return
		}
		rc.extend(ext, now)
	case r.Command == proto.RelayTruncate:
		proto.PutCell(c)
		if rc.next != nil {
			rc.emit(relayAction{kind: actDestroy, l: rc.next, id: rc.nextID, reason: proto.DestroyRequested})
		}
		rc.lostNext(proto.DestroyRequested)
	case r.Command == proto.RelayBegin:
		b, err := proto.ParseBegin(r.Data)
		sid := r.StreamID
		proto.PutCell(c)
		// The origin numbers its streams below lastHopStreams.
		if err != nil || sid == 0 || sid >= lastHopStreams {
			rc.end(proto.DestroyProtocol, true)
			return
		}
		rc.emit(relayAction{kind: actBegin, stream: sid, dest: b.Dest})
	case streamFamily(r.Command):
		rc.emit(relayAction{kind: actDeliver, c: c, relay: r, tag: t})
	default:
		proto.PutCell(c) // EXTENDED2, TRUNCATED, CONNECTED... have no business going forward
		rc.end(proto.DestroyProtocol, true)
	}
}

// extend starts the dial to the next hop an EXTEND2 names; cells keep
// being handled while it runs.
func (rc *relayCore) extend(ext proto.Extend2, now time.Time) {
	if !rc.cfg.relays {
		rc.truncated(proto.DestroyResourceLimit) // we end circuits, we do not relay them
		return
	}
	if ext.Next == rc.cfg.self || ext.Next == rc.prev.Peer() || !ext.Addr.IsValid() {
		rc.truncated(proto.DestroyProtocol)
		return
	}
	rc.dialing = true
	rc.dialGen++
	rc.create = ext.Create
	rc.emit(relayAction{kind: actDial, next: ext.Next, addr: ext.Addr, deadline: now.Add(rc.cfg.extendTimeout), gen: rc.dialGen})
}

// dialed takes the outcome of a dial: CREATE2 to the new next hop, or
// TRUNCATED to the origin.
func (rc *relayCore) dialed(ev relayEvent) {
	if !rc.dialing || ev.gen != rc.dialGen {
		return // a dial cancelled by TRUNCATE; the shell reserved no ID for it
	}
	rc.dialing = false
	if ev.l == nil {
		rc.truncated(ev.reason)
		return
	}
	rc.next, rc.nextID, rc.extending = ev.l, ev.id, true
	out := proto.GetCell()
	out.SetCircID(ev.id)
	out.SetCommand(proto.CmdCreate2)
	rc.create.Append(out.Payload()[:0])
	rc.create = proto.Create2{}
	rc.emit(relayAction{kind: actSend, l: ev.l, c: out})
}

// relayCirc is the shell of a circuit someone else built through this
// node. The link handlers, its dials and the switch only queue inputs to
// it (relayQueue); a goroutine (run), started by the first input to an
// empty queue and gone once the queue is empty again, owns its relayCore
// meanwhile. An idle circuit thus holds no goroutine and no buffer.
type relayCirc struct {
	sw     *Switch
	handle uint64
	prev   link.Conn
	prevID uint32
	q      relayQueue
	runFn  func() // rc.run, made once: "go rc.run()" would allocate its closure per start

	// Guarded by sw.mu: expireIdle's last look at the cell counters.
	idleCells uint64
	idleSince time.Time

	// Owned by the goroutine that runs the circuit (see relayQueue).
	create     *proto.Cell // the CREATE2, until the first run answers it
	core       *relayCore
	cancelDial context.CancelFunc
	ep         endpoint // sends backward to prev; streams when we are the last hop
}

func (rc *relayCirc) deliver(it inbound) bool {
	ok, start := rc.q.push(it)
	if start {
		go rc.runFn()
	}
	return ok
}

func (rc *relayCirc) kill(reason proto.DestroyReason) {
	if rc.q.kill(reason) {
		go rc.runFn()
	}
}

// run owns the circuit until its queue is empty or the circuit is over.
// The first run (handleCreate starts it, the queue marked owned) answers
// the CREATE2. The clock is read once per batch: the cells drained
// together share it (reading it per cell cost several percent of a
// relay's CPU on a VM's slow clock).
func (rc *relayCirc) run() {
	sw := rc.sw
	if rc.create != nil {
		if !rc.start() {
			rc.teardown()
			return
		}
	}
	var batch []inbound
	for {
		kill, dialed, cells, more := rc.q.take(batch)
		if !more {
			return // the next input starts another run
		}
		now := sw.cfg.Now()
		if kill != proto.DestroyNone {
			rc.step(relayEvent{kind: evKill, reason: kill}, now)
		}
		for i := 0; i < len(dialed) && !rc.core.done; i++ {
			rc.step(dialed[i], now)
		}
		for i := 0; i < len(cells) && !rc.core.done; i++ {
			rc.input(cells[i], now)
			cells[i].c = nil // the core owns it now
		}
		if rc.core.done {
			for _, it := range cells {
				if it.c != nil {
					proto.PutCell(it.c)
				}
			}
			rc.teardown()
			return
		}
		if rc.fewCells() {
			rc.parkHop()
		}
		batch = cells
	}
}

// parkedBelow is the number of cells under which a relayed circuit drops
// its onion hop's cipher state after each burst: one that has carried only
// its building cells (EXTEND2, EXTENDED2, a BEGIN) waits, mostly, and the
// ~2.6 KB of expanded keys would be most of its cost; rebuilding them
// takes a few microseconds. A busier circuit keeps its state until the
// idle reaper finds it quiet (quiet).
const parkedBelow = 16

func (rc *relayCirc) fewCells() bool {
	return rc.ep.stats.cellsSent.Load()+rc.ep.stats.cellsRecv.Load() < parkedBelow
}

// parkHop drops the hop's cipher state. The caller owns the circuit; the
// backward direction is also our own streams' (under sendMu).
func (rc *relayCirc) parkHop() {
	if rc.core == nil || rc.core.hop == nil {
		return
	}
	rc.ep.sendMu.Lock()
	rc.core.hop.Park()
	rc.ep.sendMu.Unlock()
}

// quiet, from the idle reaper, drops what a circuit that has been quiet
// for one of its rounds need not keep: its queue buffers and its hop's
// cipher state. It does nothing to a circuit a goroutine owns.
func (rc *relayCirc) quiet() {
	if !rc.q.claim() {
		return
	}
	rc.parkHop()
	if rc.q.release() {
		go rc.runFn()
	}
}

// start answers the CREATE2; false means the circuit is already over.
func (rc *relayCirc) start() bool {
	sw := rc.sw
	create := rc.create
	rc.create = nil
	rc.core = newRelayCore(relayCoreConfig{
		self:          sw.id.ID,
		relays:        sw.cfg.Flags&proto.FlagRelay != 0,
		maxEarly:      sw.cfg.MaxRelayEarly,
		extendTimeout: sw.cfg.ExtendTimeout,
	}, rc.prev, rc.prevID)
	cur, prev := sw.id.OnionKeys()
	rc.core.answerCreate(create, onion.ServerKeys{Current: cur, Previous: prev}, sw.cfg.Rand)
	if !rc.core.done {
		rc.ep.hops = []*onion.Hop{rc.core.hop}
	}
	rc.exec(sw.cfg.Now())
	if rc.core.done {
		return false
	}
	// The action buffer (~240 bytes an action) grows again with traffic;
	// an idle circuit need not keep the one that answered the CREATE2.
	rc.core.acts = nil
	sw.emit(Event{Kind: EventJoined, Circuit: rc.handle, Hops: 1})
	return true
}

func (rc *relayCirc) input(it inbound, now time.Time) {
	if it.c == nil {
		rc.step(relayEvent{kind: evLinkClosed, l: it.l}, now)
		return
	}
	if it.l == rc.prev {
		if cmd := it.c.Command(); cmd == proto.CmdRelay || cmd == proto.CmdRelayEarly {
			rc.ep.stats.recv(0)
		}
	}
	rc.step(relayEvent{kind: evCell, l: it.l, c: it.c}, now)
}

// step feeds one event to the core and executes what it asks.
func (rc *relayCirc) step(ev relayEvent, now time.Time) {
	if ev.kind == evDialed && ev.l != nil {
		// Reserve the circuit ID on the new link only if the core still
		// wants this dial: a stale one must leave no route behind.
		if !rc.core.awaitsDial(ev.gen) {
			ev.l = nil
		} else if id, err := rc.sw.allocID(ev.l, rc); err != nil {
			ev.l, ev.reason = nil, proto.DestroyResourceLimit
		} else {
			ev.id = id
		}
	}
	if ev.kind == evDialed && ev.gen == rc.core.dialGen && rc.cancelDial != nil {
		// The current dial is over (a stale one's result must not cancel
		// its successor): let its context go.
		rc.cancelDial()
		rc.cancelDial = nil
	}
	rc.core.handle(ev, now)
	rc.exec(now)
}

// exec carries out the core's actions. An action that fails becomes an
// event for the core, handled once the current batch is done.
func (rc *relayCirc) exec(now time.Time) {
	for {
		var follow relayEvent
		acts := rc.core.ready()
		for i := range acts {
			if ev := rc.do(&acts[i]); ev.kind != 0 && follow.kind == 0 {
				follow = ev
			}
		}
		if follow.kind == 0 {
			return
		}
		rc.core.handle(follow, now)
	}
}

// do executes one action; it returns the event its failure makes, if any.
func (rc *relayCirc) do(a *relayAction) relayEvent {
	sw := rc.sw
	switch a.kind {
	case actSend:
		if err := a.l.SendCell(a.c); err != nil {
			return relayEvent{kind: evSendFailed, l: a.l}
		}
	case actSendBack:
		rc.ep.stats.sent(0)
		rc.ep.sendMu.Lock() // the backward keystream is shared with our own cells
		rc.core.hop.RelayBackward(a.c.PayloadArray())
		err := rc.prev.SendCell(a.c)
		rc.ep.sendMu.Unlock()
		if err != nil {
			return relayEvent{kind: evSendFailed, l: rc.prev}
		}
	case actControl:
		if err := rc.ep.sendControl(0, false, a.cmd, 0, a.data); err != nil {
			return relayEvent{kind: evSendFailed, l: rc.prev}
		}
	case actDeliver:
		res, handled := rc.ep.onStreamCell(a.relay, a.c, a.tag)
		if !res.keep {
			proto.PutCell(a.c)
		}
		switch {
		case !handled:
			return relayEvent{kind: evKill, reason: proto.DestroyProtocol}
		case res.destroy != 0:
			return relayEvent{kind: evKill, reason: res.destroy}
		}
		rc.ep.stats.bytesRecv.Add(uint64(a.relay.Length))
	case actBegin:
		rc.ep.begin(a.stream, a.dest)
	case actDestroy:
		sendDestroy(a.l, a.id, a.reason)
	case actForget:
		sw.unregister(a.l, a.id, rc)
	case actDial:
		rc.dial(a)
	case actCancelDial:
		if rc.cancelDial != nil {
			rc.cancelDial()
			rc.cancelDial = nil
		}
	case actClose:
		// teardown, once loop sees the core done.
	}
	return relayEvent{}
}

// dial gets a link to the next hop in its own goroutine, so that a slow
// or unreachable node never holds up this circuit's cells, and reports to
// dialc. The circuit's end (Close included: it kills every circuit)
// cancels it, as does the deadline.
func (rc *relayCirc) dial(a *relayAction) {
	sw := rc.sw
	if rc.cancelDial != nil {
		rc.cancelDial() // the core allows one dial at a time; be safe
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.deadline.Sub(sw.cfg.Now()))
	rc.cancelDial = cancel
	gen, next, addr := a.gen, a.next, a.addr // *a is reused once dial returns
	sw.wg.Add(1)                             // the circuit holds a count: no race with Wait
	go func() {
		defer sw.wg.Done()
		defer cancel()
		ev := relayEvent{kind: evDialed, gen: gen}
		ev.l, ev.reason = sw.extendDial(ctx, next, addr) // budget.go: address policy, dial cap
		if rc.q.pushDialed(ev) {
			go rc.runFn()
		}
	}()
}

func (rc *relayCirc) teardown() {
	sw := rc.sw
	reason := rc.core.reason
	if rc.cancelDial != nil {
		rc.cancelDial()
	}
	sw.unregister(rc.prev, rc.prevID, rc)
	rc.ep.close(reason)
	sw.mu.Lock()
	sw.joined--
	if sw.perLink[rc.prev]--; sw.perLink[rc.prev] <= 0 {
		delete(sw.perLink, rc.prev)
	}
	sw.mu.Unlock()
	// Release what the handlers queued before they saw us go; from now on
	// the queue drops what comes.
	for _, it := range rc.q.close() {
		if it.c != nil {
			proto.PutCell(it.c)
		}
	}
	sw.emit(Event{Kind: EventClosed, Circuit: rc.handle, Reason: reason, Stats: rc.ep.stats.snapshot()})
	sw.wg.Done()
}
