package circuits

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"veil/circuits/onion"
	"veil/proto"
)

type cryptoRand struct{}

func (cryptoRand) Read(p []byte) (int, error) { return crand.Read(p) }

// Build errors.
var (
	ErrBuildFailed = errors.New("circuits: circuit build failed")
	ErrTruncated   = errors.New("circuits: circuit truncated")
	ErrPathTooLong = errors.New("circuits: path longer than RELAY_EARLY allows")
)

// Circuit is an origin circuit: one we built, through a path of hops, to
// open streams at its last hop. One goroutine owns its receive side; its
// methods are safe for concurrent use.
type Circuit struct {
	ep     endpoint
	handle uint64
	first  cellLink
	in     chan inbound
	killc  chan proto.DestroyReason
	ended  chan struct{} // closed when run has returned
	born   time.Time

	mu      sync.Mutex // guards path, pending, reply, truncTo
	path    []proto.NodeDescriptor
	pending *onion.ClientHandshake // the hop being added, if any
	reply   chan error             // where run reports the pending hop's result
	truncTo int                    // hops to keep after a TRUNCATE we sent; -1: none
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

// Close destroys the circuit (DESTROY FINISHED to the first hop) and waits
// for its goroutine. Idempotent.
func (c *Circuit) Close() error {
	c.kill(proto.DestroyFinished)
	<-c.ended
	return nil
}

func (c *Circuit) deliver(it inbound) bool {
	select {
	case c.in <- it:
		return true
	default:
		return false
	}
}

func (c *Circuit) kill(reason proto.DestroyReason) {
	select {
	case c.killc <- reason:
	default:
	}
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
		handle:  sw.handle(),
		in:      make(chan inbound, sw.cfg.QueueCells),
		killc:   make(chan proto.DestroyReason, 1),
		ended:   make(chan struct{}),
		born:    sw.cfg.Now(),
		path:    append([]proto.NodeDescriptor(nil), path...),
		truncTo: -1,
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
	l, err := sw.links.getLink(ctx, path[0].ID, addr)
	if err != nil {
		return fail(fmt.Errorf("link to first hop: %w", err))
	}
	id, err := sw.allocID(l, c)
	if err != nil {
		return fail(err)
	}
	c.first = l
	c.ep.out, c.ep.outID = l, id
	sw.mu.Lock()
	sw.wg.Add(1)
	sw.mu.Unlock()
	go c.run()

	for i, d := range path {
		if err := d.Verify(sw.cfg.Now()); err != nil {
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

// addHop performs hop i's handshake: CREATE2 for the first hop, EXTEND2
// through hop i-1 for the others; run finishes it when the answer comes.
func (c *Circuit) addHop(ctx context.Context, i int, d proto.NodeDescriptor) error {
	sw := c.ep.sw
	hs, create, err := onion.NewClientHandshake(sw.cfg.Rand, d.ID, d.OnionKey)
	if err != nil {
		return err
	}
	reply := make(chan error, 1)
	c.mu.Lock()
	c.pending, c.reply = hs, reply
	c.mu.Unlock()
	if i == 0 {
		cell := proto.GetCell()
		cell.SetCircID(c.ep.outID)
		cell.SetCommand(proto.CmdCreate2)
		create.Append(cell.Payload()[:0])
		c.ep.sendMu.Lock()
		err = c.first.SendCell(cell)
		c.ep.sendMu.Unlock()
	} else {
		var ap netip.AddrPort
		for _, a := range d.Addrs {
			if a.IsValid() {
				ap = a
				break
			}
		}
		if !ap.IsValid() {
			return fmt.Errorf("node %s has no address", d.ID.Short())
		}
		ext := onion.Extend2{Next: d.ID, Addr: ap, Create: create}
		err = c.ep.sendControl(i-1, true, proto.RelayExtend2, 0, ext.Append(make([]byte, 0, ext.Len())))
	}
	if err != nil {
		return err
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-c.ep.done:
		return fmt.Errorf("%w (%v)", ErrDestroyed, c.Reason())
	}
}

// finishHop completes the pending handshake with the server's answer (run
// only). It appends the hop under sendMu.
func (c *Circuit) finishHop(body onion.Created2) error {
	c.mu.Lock()
	hs, reply := c.pending, c.reply
	c.pending, c.reply = nil, nil
	c.mu.Unlock()
	if hs == nil {
		return errors.New("unexpected handshake answer")
	}
	km, err := hs.Finish(body)
	if err == nil {
		h := onion.NewHop(&km)
		clear(km[:])
		c.ep.sendMu.Lock()
		c.ep.hops = append(c.ep.hops, h)
		c.ep.sendMu.Unlock()
	}
	reply <- err
	return err
}

func (c *Circuit) failPending(err error) {
	c.mu.Lock()
	reply := c.reply
	c.pending, c.reply = nil, nil
	c.mu.Unlock()
	if reply != nil {
		reply <- err
	}
}

// Truncate keeps the first keep hops and tears down the rest (TRUNCATE to
// hop keep). The circuit can then be extended again with Extend.
func (c *Circuit) Truncate(ctx context.Context, keep int) error {
	if keep < 1 || keep >= c.Hops() {
		return fmt.Errorf("circuits: cannot truncate %d hops to %d", c.Hops(), keep)
	}
	reply := make(chan error, 1)
	c.mu.Lock()
	if c.reply != nil {
		c.mu.Unlock()
		return errors.New("circuits: circuit busy extending")
	}
	c.truncTo, c.reply = keep, reply
	c.mu.Unlock()
	if err := c.ep.sendControl(keep-1, false, proto.RelayTruncate, 0, nil); err != nil {
		return err
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-c.ep.done:
		return ErrCircuitClosed
	}
}

// Extend adds hop d (a descriptor that verifies) at the end of a built
// circuit.
func (c *Circuit) Extend(ctx context.Context, d proto.NodeDescriptor) error {
	if err := d.Verify(c.ep.sw.cfg.Now()); err != nil {
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

// run owns the circuit's receive side until it closes.
func (c *Circuit) run() {
	sw := c.ep.sw
	defer sw.wg.Done()
	defer close(c.ended)
	var reason proto.DestroyReason
	sendDestroyFirst := true
loop:
	for {
		select {
		case it := <-c.in:
			r, send, done := c.step(it)
			for n := len(c.in); !done && n > 0; n-- {
				r, send, done = c.step(<-c.in) // what else is queued, without a full select
			}
			if done {
				reason, sendDestroyFirst = r, send
				break loop
			}
		case r := <-c.killc:
			reason = r
			break loop
		case <-sw.stop:
			reason = proto.DestroyHibernating
			break loop
		}
	}
	sw.unregister(c.first, c.ep.outID, c)
	if sendDestroyFirst {
		sendDestroy(c.first, c.ep.outID, reason)
	}
	c.ep.close(reason)
	c.failPending(fmt.Errorf("%w (%v)", ErrDestroyed, reason))
	for {
		select {
		case it := <-c.in:
			if it.c != nil {
				proto.PutCell(it.c)
			}
		default:
			sw.emit(Event{Kind: EventClosed, Circuit: c.handle, Origin: true, Path: c.pathIDs(), Hops: len(c.ep.hops), Reason: reason, Stats: c.ep.stats.snapshot()})
			return
		}
	}
}

// step handles one input of run; done ends the circuit with reason.
func (c *Circuit) step(it inbound) (reason proto.DestroyReason, sendDestroy, done bool) {
	if it.c == nil {
		return proto.DestroyChannelClosed, false, true
	}
	cell := it.c
	defer func() {
		if cell != nil {
			proto.PutCell(cell)
		}
	}()
	switch cell.Command() {
	case proto.CmdDestroy:
		r, _ := proto.ParseDestroy(cell.Payload())
		return r, false, true
	case proto.CmdCreated2:
		body, err := onion.ParseCreated2(cell.Payload())
		if err != nil || len(c.ep.hops) != 0 {
			return proto.DestroyProtocol, true, true
		}
		if err := c.finishHop(body); err != nil {
			return proto.DestroyProtocol, true, true
		}
		return 0, false, false
	case proto.CmdRelay:
	default: // RELAY_EARLY backward, CREATE2 on our ID, ...
		return proto.DestroyProtocol, true, true
	}
	c.ep.stats.recv(0)
	hop, t, ok := onion.OpenBackward(c.ep.hops, cell.PayloadArray())
	if !ok {
		return proto.DestroyProtocol, true, true // modified, dropped, reordered or forged
	}
	r, err := proto.ParseRelay(cell.Payload())
	if err != nil {
		return proto.DestroyProtocol, true, true
	}
	switch r.Command {
	case proto.RelayExtended2:
		body, err := onion.ParseCreated2(r.Data)
		if err != nil || hop != len(c.ep.hops)-1 {
			return proto.DestroyProtocol, true, true
		}
		if err := c.finishHop(body); err != nil {
			return proto.DestroyProtocol, true, true
		}
		return 0, false, false
	case proto.RelayTruncated:
		why, _ := onion.ParseReason(r.Data)
		c.mu.Lock()
		want := c.truncTo
		reply := c.reply
		if want == hop+1 {
			c.truncTo, c.reply = -1, nil
		}
		pending := c.pending
		c.mu.Unlock()
		switch {
		case want == hop+1:
			c.ep.sendMu.Lock()
			c.ep.hops = c.ep.hops[:hop+1]
			c.ep.newLastHop()
			c.ep.sendMu.Unlock()
			reply <- nil
			return 0, false, false
		case pending != nil && hop == len(c.ep.hops)-1:
			// The extend we asked for failed at the last hop.
			c.failPending(fmt.Errorf("%w: %v", ErrTruncated, proto.DestroyReason(why)))
			return 0, false, false
		}
		// Part of a built circuit went away: the circuit is broken.
		return proto.DestroyReason(why), true, true
	}
	if hop != len(c.ep.hops)-1 {
		return proto.DestroyProtocol, true, true // streams live at the last hop only
	}
	if r.Command == proto.RelayBegin {
		b, err := onion.ParseBegin(r.Data)
		if err != nil || !c.ep.peerStreamID(r.StreamID) {
			return proto.DestroyProtocol, true, true
		}
		c.ep.begin(r.StreamID, b.Dest)
		return 0, false, false
	}
	res, handled := c.ep.onStreamCell(r, cell, t)
	if !handled {
		return proto.DestroyProtocol, true, true
	}
	if res.keep {
		cell = nil
	}
	if res.destroy != 0 {
		return res.destroy, true, true
	}
	c.ep.stats.bytesRecv.Add(uint64(r.Length))
	return 0, false, false
}
