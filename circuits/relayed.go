package circuits

import (
	"bytes"
	"context"
	"time"

	"veil/circuits/onion"
	"veil/proto"
)

// relayCirc is a circuit someone else built through this node. One
// goroutine (run) owns it; the link handlers only queue cells to it.
//
//	prev (towards the origin) <-> this hop <-> next (towards the last hop)
//
// Forward cells arrive from prev; we remove our layer and either consume
// them (recognised) or pass them to next. Backward cells arrive from next;
// we add our layer and pass them to prev. With no next hop we are the last
// hop: streams end here at services.
type relayCirc struct {
	sw     *Switch
	handle uint64
	prev   cellLink
	prevID uint32
	in     chan inbound
	killc  chan proto.DestroyReason

	// Guarded by sw.mu: expireIdle's last look at the cell counters.
	idleCells uint64
	idleSince time.Time

	// Owned by run.
	hop       *onion.Hop
	next      cellLink
	nextID    uint32
	extending bool
	early     int
	ep        endpoint // sends backward to prev; streams when we are the last hop
}

func (rc *relayCirc) deliver(it inbound) bool {
	select {
	case rc.in <- it:
		return true
	default:
		return false
	}
}

func (rc *relayCirc) kill(reason proto.DestroyReason) {
	select {
	case rc.killc <- reason:
	default:
	}
}

func (rc *relayCirc) run(create *proto.Cell) {
	defer rc.sw.wg.Done()
	reason, sendPrev := rc.answerCreate(create)
	if reason == 0 {
		rc.sw.emit(Event{Kind: EventJoined, Circuit: rc.handle, Hops: 1})
		reason, sendPrev = rc.loop()
	}
	rc.teardown(reason, sendPrev)
}

func (rc *relayCirc) answerCreate(c *proto.Cell) (proto.DestroyReason, bool) {
	defer proto.PutCell(c)
	req, err := onion.ParseCreate2(c.Payload())
	if err != nil {
		return proto.DestroyProtocol, true
	}
	cur, prev := rc.sw.id.OnionKeys()
	resp, km, err := onion.ServerHandshake(rc.sw.cfg.Rand, rc.sw.id.ID, onion.ServerKeys{Current: cur, Previous: prev}, req)
	if err != nil {
		return proto.DestroyProtocol, true
	}
	rc.hop = onion.NewHop(&km)
	clear(km[:])
	rc.ep.hops = []*onion.Hop{rc.hop}
	out := proto.GetCell()
	out.SetCircID(rc.prevID)
	out.SetCommand(proto.CmdCreated2)
	resp.Append(out.Payload()[:0])
	if err := rc.prev.SendCell(out); err != nil {
		return proto.DestroyChannelClosed, false
	}
	return 0, false
}

// loop handles inputs until the circuit ends; it returns the reason and
// whether prev should get a DESTROY.
func (rc *relayCirc) loop() (proto.DestroyReason, bool) {
	for {
		select {
		case it := <-rc.in:
			if reason, sendPrev, done := rc.step(it); done {
				return reason, sendPrev
			}
			// Take what else is queued without the cost of a full select.
			for range len(rc.in) {
				if reason, sendPrev, done := rc.step(<-rc.in); done {
					return reason, sendPrev
				}
			}
		case r := <-rc.killc:
			return r, true
		case <-rc.sw.stop:
			return proto.DestroyHibernating, true
		}
	}
}

// step handles one input; done means the circuit is over.
func (rc *relayCirc) step(it inbound) (reason proto.DestroyReason, sendPrev, done bool) {
	fromPrev := it.l == rc.prev
	if it.c == nil { // a link closed
		if fromPrev {
			return proto.DestroyChannelClosed, false, true
		}
		if it.l == rc.next {
			return rc.lostNext(proto.DestroyChannelClosed)
		}
		return 0, false, false
	}
	c := it.c
	if !fromPrev && (it.l != rc.next || c.CircID() != rc.nextID) {
		// Queued before a TRUNCATE or a lost next hop cut that part of the
		// circuit: the origin no longer has its layers.
		proto.PutCell(c)
		return 0, false, false
	}
	switch cmd := c.Command(); {
	case cmd == proto.CmdDestroy:
		r, _ := proto.ParseDestroy(c.Payload())
		proto.PutCell(c)
		if fromPrev {
			return r, false, true
		}
		return rc.lostNext(r)

	case fromPrev && (cmd == proto.CmdRelay || cmd == proto.CmdRelayEarly):
		if cmd == proto.CmdRelayEarly {
			rc.early++
			if rc.early > rc.sw.cfg.MaxRelayEarly {
				proto.PutCell(c)
				return proto.DestroyProtocol, true, true
			}
		}
		rc.ep.stats.recv(0)
		if t, ok := rc.hop.OpenForward(c.PayloadArray()); ok {
			return rc.recognised(c, t, cmd == proto.CmdRelayEarly)
		}
		if rc.next == nil || rc.extending {
			proto.PutCell(c) // nobody to pass it to: it was damaged on the way
			return proto.DestroyProtocol, true, true
		}
		c.SetCircID(rc.nextID)
		if err := rc.next.SendCell(c); err != nil {
			return rc.lostNext(proto.DestroyChannelClosed)
		}
		return 0, false, false

	case !fromPrev && cmd == proto.CmdRelay:
		c.SetCircID(rc.prevID)
		rc.ep.stats.sent(0)
		rc.ep.sendMu.Lock() // the backward keystream is shared with our own cells
		rc.hop.RelayBackward(c.PayloadArray())
		err := rc.prev.SendCell(c)
		rc.ep.sendMu.Unlock()
		if err != nil {
			return proto.DestroyChannelClosed, false, true
		}
		return 0, false, false

	case !fromPrev && cmd == proto.CmdCreated2 && rc.extending:
		body, err := onion.ParseCreated2(c.Payload())
		if err != nil || body.Len() > proto.RelayDataSize {
			proto.PutCell(c)
			return rc.lostNext(proto.DestroyProtocol)
		}
		data := body.Append(make([]byte, 0, body.Len()))
		proto.PutCell(c)
		rc.extending = false
		if err := rc.ep.sendControl(0, false, proto.RelayExtended2, 0, data); err != nil {
			return proto.DestroyChannelClosed, false, true
		}
		return 0, false, false
	}
	// CREATED2 from prev, RELAY_EARLY backward, unexpected CREATED2, ...
	proto.PutCell(c)
	return proto.DestroyProtocol, true, true
}

// lostNext handles the end of the part of the circuit after us: the origin
// gets TRUNCATED with the reason and may extend again or tear down.
func (rc *relayCirc) lostNext(reason proto.DestroyReason) (proto.DestroyReason, bool, bool) {
	if rc.next != nil {
		rc.sw.unregister(rc.next, rc.nextID, rc)
	}
	rc.next, rc.nextID, rc.extending = nil, 0, false
	if err := rc.ep.sendControl(0, false, proto.RelayTruncated, 0, []byte{byte(reason)}); err != nil {
		return proto.DestroyChannelClosed, false, true
	}
	return 0, false, false
}

// recognised handles a relay cell addressed to this hop.
func (rc *relayCirc) recognised(c *proto.Cell, t onion.Tag, early bool) (proto.DestroyReason, bool, bool) {
	r, err := proto.ParseRelay(c.Payload())
	if err != nil {
		proto.PutCell(c)
		return proto.DestroyProtocol, true, true
	}
	switch r.Command {
	case proto.RelayExtend2:
		ext, err := onion.ParseExtend2(r.Data)
		ext.Create.HData = bytes.Clone(ext.Create.HData) // r.Data dies with c
		proto.PutCell(c)
		if err != nil || !early || rc.next != nil || rc.extending {
			return proto.DestroyProtocol, true, true
		}
		return rc.extend(ext)
	case proto.RelayTruncate:
		proto.PutCell(c)
		if rc.next != nil {
			sendDestroy(rc.next, rc.nextID, proto.DestroyRequested)
		}
		return rc.lostNext(proto.DestroyRequested)
	case proto.RelayBegin:
		b, err := onion.ParseBegin(r.Data)
		sid := r.StreamID
		proto.PutCell(c)
		if err != nil || sid == 0 {
			return proto.DestroyProtocol, true, true
		}
		if !rc.ep.peerStreamID(sid) {
			return proto.DestroyProtocol, true, true
		}
		rc.ep.begin(sid, b.Dest)
		return 0, false, false
	}
	res, handled := rc.ep.onStreamCell(r, c, t)
	if !handled {
		proto.PutCell(c) // EXTENDED2, TRUNCATED, CONNECTED... have no business going forward
		return proto.DestroyProtocol, true, true
	}
	if !res.keep {
		proto.PutCell(c)
	}
	if res.destroy != 0 {
		return res.destroy, true, true
	}
	rc.ep.stats.bytesRecv.Add(uint64(r.Length))
	return 0, false, false
}

func (rc *relayCirc) extend(ext onion.Extend2) (proto.DestroyReason, bool, bool) {
	truncated := func(r proto.DestroyReason) (proto.DestroyReason, bool, bool) {
		if err := rc.ep.sendControl(0, false, proto.RelayTruncated, 0, []byte{byte(r)}); err != nil {
			return proto.DestroyChannelClosed, false, true
		}
		return 0, false, false
	}
	if rc.sw.cfg.Flags&proto.FlagRelay == 0 {
		return truncated(proto.DestroyResourceLimit) // we end circuits, we do not relay them
	}
	if ext.Next == rc.sw.id.ID || ext.Next == rc.prev.Peer() || !ext.Addr.IsValid() {
		return truncated(proto.DestroyProtocol)
	}
	ctx, cancel := context.WithTimeout(context.Background(), rc.sw.cfg.ExtendTimeout)
	go func() {
		select {
		case <-rc.sw.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	l, err := rc.sw.links.getLink(ctx, ext.Next, ext.Addr.String())
	cancel()
	if err != nil {
		return truncated(proto.DestroyConnectFailed)
	}
	id, err := rc.sw.allocID(l, rc)
	if err != nil {
		return truncated(proto.DestroyResourceLimit)
	}
	rc.next, rc.nextID, rc.extending = l, id, true
	out := proto.GetCell()
	out.SetCircID(id)
	out.SetCommand(proto.CmdCreate2)
	ext.Create.Append(out.Payload()[:0])
	if err := l.SendCell(out); err != nil {
		return rc.lostNext(proto.DestroyConnectFailed)
	}
	return 0, false, false
}

func (rc *relayCirc) teardown(reason proto.DestroyReason, sendPrev bool) {
	sw := rc.sw
	sw.unregister(rc.prev, rc.prevID, rc)
	if rc.next != nil {
		sw.unregister(rc.next, rc.nextID, rc)
		sendDestroy(rc.next, rc.nextID, reason)
	}
	if sendPrev {
		sendDestroy(rc.prev, rc.prevID, reason)
	}
	rc.ep.close(reason)
	sw.mu.Lock()
	sw.joined--
	if sw.perLink[rc.prev]--; sw.perLink[rc.prev] <= 0 {
		delete(sw.perLink, rc.prev)
	}
	sw.mu.Unlock()
	// Drain what the handlers queued before they saw us go.
	for {
		select {
		case it := <-rc.in:
			if it.c != nil {
				proto.PutCell(it.c)
			}
		default:
			sw.emit(Event{Kind: EventClosed, Circuit: rc.handle, Reason: reason, Stats: rc.ep.stats.snapshot()})
			return
		}
	}
}
