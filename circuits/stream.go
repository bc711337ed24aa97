package circuits

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"veil/circuits/link"
	"veil/circuits/onion"
	"veil/proto"
)

// Stream END reasons (Tor's numbering where Tor has one).
const (
	EndMisc           uint8 = 1
	EndResolveFailed  uint8 = 2 // an exit could not resolve the name
	EndConnectRefused uint8 = 3
	EndExitPolicy     uint8 = 4 // an exit's policy refuses the destination
	EndDestroy        uint8 = 5
	EndDone           uint8 = 6
	EndTimeout        uint8 = 7
	EndNoRoute        uint8 = 8 // an exit has no route to the destination
	EndResourceLimit  uint8 = 11
	EndNoService      uint8 = 12 // veil: no service of that name at the last hop
)

// Stream errors.
var (
	ErrStreamClosed   = errors.New("circuits: stream closed")
	ErrStreamRefused  = errors.New("circuits: stream refused by the last hop")
	ErrCircuitClosed  = errors.New("circuits: circuit closed")
	ErrTooManyStreams = errors.New("circuits: too many streams on the circuit")
)

// RefusedError is the error of a stream the other end refused with END
// before CONNECTED: errors.Is(err, ErrStreamRefused) holds, and Reason
// says why (EndExitPolicy, EndResolveFailed, ...).
type RefusedError struct {
	Dest   string
	Reason uint8
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%v: %q: END reason %d", ErrStreamRefused, e.Dest, e.Reason)
}

// Unwrap is ErrStreamRefused.
func (e *RefusedError) Unwrap() error { return ErrStreamRefused }

// endpoint is the stream-carrying end of a circuit: the origin's Circuit
// (which seals cells forward for any hop of its path) or the last hop of a
// circuit we carry (which seals backward with its one hop). It multiplexes
// streams and runs the SENDME windows.
//
// Locks: sendMu is held across sealing and handing a cell to the link, so
// cells leave in the order their keystream and GMAC counter were used; mu
// guards the windows, the streams and the state. Order: sendMu, then mu.
// Nobody waits on a window while holding sendMu, so the circuit goroutine
// can always send the SENDMEs that open windows.
type endpoint struct {
	sw     *Switch
	origin bool
	handle uint64 // the circuit's local handle, for StreamAddr
	stats  counters

	sendMu sync.Mutex
	out    link.Conn // where sealed cells go; set before use, then fixed
	outID  uint32
	hops   []*onion.Hop // origin: the path; last hop: its one hop. Appended under sendMu by the circuit goroutine only.

	mu         sync.Mutex
	sendWin    onion.SendWindow
	recvWin    onion.RecvWindow
	streams    map[uint16]*Stream
	nextStream uint16
	// pushed and popped count the cells that entered and left the
	// streams' receive queues (wrapping): their difference is what the
	// circuit holds for its readers, popped its readers' progress.
	pushed, popped uint32
	closed         bool
	reason         proto.DestroyReason
	done           chan struct{} // closed when the circuit is closed
	// exitCtx is cancelled when the circuit closes, ending its exit
	// streams' resolutions and dials; made by the first (exitContext).
	exitCtx    context.Context
	exitCancel context.CancelFunc
}

func (e *endpoint) init(sw *Switch, origin bool) {
	e.sw = sw
	e.origin = origin
	e.sendWin = onion.NewSendWindow(sw.cfg.CircWindow, sw.cfg.CircIncrement, true)
	e.recvWin = onion.NewRecvWindow(sw.cfg.CircWindow, sw.cfg.CircIncrement)
	e.done = make(chan struct{})
}

// seal fills and seals a relay cell for hop target (origin) or for the
// origin (last hop). Caller holds sendMu.
func (e *endpoint) seal(target int, early bool, cmd proto.RelayCommand, stream uint16, data []byte) (*proto.Cell, onion.Tag, error) {
	c := proto.GetCell()
	if err := proto.PutRelay(c.PayloadArray(), proto.RelayHeader{Command: cmd, StreamID: stream}, data); err != nil {
		proto.PutCell(c)
		return nil, onion.Tag{}, err
	}
	var t onion.Tag
	if e.origin {
		t = onion.SealForward(e.hops, target, c.PayloadArray())
	} else {
		t = e.hops[0].SealBackward(c.PayloadArray())
	}
	c.SetCircID(e.outID)
	if early {
		c.SetCommand(proto.CmdRelayEarly)
	} else {
		c.SetCommand(proto.CmdRelay)
	}
	return c, t, nil
}

// lastHop names the circuit's last hop as a sendControl target; it is
// resolved under sendMu, since Extend and Truncate change the path.
const lastHop = -1

// sendControl sends a relay cell that no window counts (SENDME, BEGIN,
// END, EXTEND2, ...) to hop target (or lastHop). It may block while the
// link's queue is full.
func (e *endpoint) sendControl(target int, early bool, cmd proto.RelayCommand, stream uint16, data []byte) error {
	e.sendMu.Lock()
	defer e.sendMu.Unlock()
	if target == lastHop {
		target = len(e.hops) - 1
	}
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return ErrCircuitClosed
	}
	if target < 0 || target >= len(e.hops) {
		return fmt.Errorf("circuits: no hop %d on the circuit", target)
	}
	c, _, err := e.seal(target, early, cmd, stream, data)
	if err != nil {
		return err
	}
	e.stats.sent(0)
	return e.out.SendCell(c)
}

// sendData sends one counted cell on stream s, waiting for both windows.
func (e *endpoint) sendData(s *Stream, cmd proto.RelayCommand, data []byte) error {
	for {
		e.mu.Lock()
		for !e.closed && !s.localClosed && !s.peerEnded && !e.past(s.wdeadline) && s.windowShutLocked() {
			s.cond.Wait()
		}
		err := s.writeErrLocked()
		if err == nil && e.past(s.wdeadline) && s.windowShutLocked() {
			err = errDeadline
		}
		e.mu.Unlock()
		if err != nil {
			return err
		}
		e.sendMu.Lock()
		if err := s.sendBeginLocked(); err != nil {
			e.sendMu.Unlock()
			return err
		}
		e.mu.Lock()
		if err := s.writeErrLocked(); err != nil {
			e.mu.Unlock()
			e.sendMu.Unlock()
			return err
		}
		if s.windowShutLocked() {
			e.mu.Unlock()
			e.sendMu.Unlock()
			continue // another stream took the last slot
		}
		c, t, err := e.seal(len(e.hops)-1, false, cmd, s.id, data)
		if err != nil {
			e.mu.Unlock()
			e.sendMu.Unlock()
			return err
		}
		e.sendWin.Sent(t)
		s.sendWin.Sent(t)
		first := !s.sentData
		s.sentData = true
		e.mu.Unlock()
		e.stats.sent(len(data))
		err = e.out.SendCell(c)
		e.sendMu.Unlock()
		if first && err == nil {
			// A stream's first data (a request) leaves now: the link's
			// writer, just woken, runs before this goroutine goes on.
			e.sw.yield()
		}
		return err
	}
}

// newLastHop starts over with a new last hop (after TRUNCATE): its streams
// are gone and its windows start full. Caller holds sendMu.
func (e *endpoint) newLastHop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.sendWin = onion.NewSendWindow(e.sw.cfg.CircWindow, e.sw.cfg.CircIncrement, true)
	e.recvWin = onion.NewRecvWindow(e.sw.cfg.CircWindow, e.sw.cfg.CircIncrement)
	for id, s := range e.streams {
		s.peerEnded = true
		s.endReason = EndDestroy
		s.dropQueueLocked()
		delete(e.streams, id)
		s.cond.Broadcast()
	}
}

// close marks the endpoint closed and wakes every stream. It reports
// whether this call closed it.
func (e *endpoint) close(reason proto.DestroyReason) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return false
	}
	e.closed = true
	e.reason = reason
	close(e.done)
	if e.exitCancel != nil {
		e.exitCancel()
	}
	for _, s := range e.streams {
		s.dropQueueLocked()
		s.cond.Broadcast()
	}
	return true
}

// relayResult tells the circuit goroutine what to do after a recognised
// relay cell.
type relayResult struct {
	keep    bool                // the cell now belongs to a stream queue
	destroy proto.DestroyReason // non-zero: tear the circuit down with it
}

// onStreamCell handles a recognised relay cell of the stream family and the
// circuit-level SENDME. tag is the cell's GMAC tag. It returns handled ==
// false for commands it does not know (the caller's role decides).
func (e *endpoint) onStreamCell(r proto.RelayCell, c *proto.Cell, t onion.Tag) (res relayResult, handled bool) {
	switch {
	case r.Command == proto.RelaySendme:
		sm, err := proto.ParseSendme(r.Data)
		if err != nil {
			return relayResult{destroy: proto.DestroyProtocol}, true
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		if r.StreamID == 0 {
			if err := e.sendWin.Sendme(sm); err != nil {
				return relayResult{destroy: proto.DestroyProtocol}, true
			}
			for _, s := range e.streams {
				s.cond.Broadcast()
			}
			return relayResult{}, true
		}
		if s := e.streams[r.StreamID]; s != nil {
			if err := s.sendWin.Sendme(sm); err != nil {
				return relayResult{destroy: proto.DestroyProtocol}, true
			}
			s.startCells = 0 // the first SENDME: the whole window now
			s.cond.Broadcast()
		}
		return relayResult{}, true

	case onion.CountsForFlow(r.Command):
		if r.StreamID == 0 {
			return relayResult{destroy: proto.DestroyProtocol}, true
		}
		e.mu.Lock()
		if err := e.recvWin.Received(); err != nil {
			e.mu.Unlock()
			return relayResult{destroy: proto.DestroyProtocol}, true
		}
		sendme := e.recvWin.Consumed()
		res := relayResult{}
		first := false
		if s := e.streams[r.StreamID]; s != nil && !s.localClosed && !s.peerEnded {
			if err := s.recvWin.Received(); err != nil {
				e.mu.Unlock()
				return relayResult{destroy: proto.DestroyProtocol}, true
			}
			if !e.origin && e.peerStreamID(s.id) && int(e.pushed-e.popped) >= e.sw.cfg.MaxCircuitQueuedCells {
				// Every stream within its window, the circuit's readers
				// far behind: the peer fills our memory (budget.go). Only
				// on streams the other end opened at a circuit of others:
				// what comes on streams we opened (an ORDB's to a
				// publisher) or on our own circuits we asked for, and the
				// node-wide budget bounds it.
				e.mu.Unlock()
				return relayResult{destroy: proto.DestroyResourceLimit}, true
			}
			s.push(c, len(r.Data))
			res.keep = true
			first = !s.gotData
			s.gotData = true
		}
		e.mu.Unlock()
		if first {
			// The stream's first data goes to its reader now, not after
			// the rest of the batch this goroutine is working through
			// (push woke the reader, which would otherwise wait for all
			// of it): a response's head (through SOCKS, an HTTP status
			// line) leaves ahead of the first flight's other cells, and
			// an exit writes a request to its destination at once.
			e.sw.yield()
		}
		if sendme {
			sm := proto.Sendme{Version: proto.SendmeVersionTag, Data: t[:]}
			if err := e.sendControl(lastHop, false, proto.RelaySendme, 0, sm.Append(make([]byte, 0, sm.Len()))); err != nil {
				return res, true
			}
		}
		return res, true

	case r.Command == proto.RelayConnected:
		e.mu.Lock()
		if s := e.streams[r.StreamID]; s != nil && !s.connected {
			s.connected = true
			s.cond.Broadcast()
		}
		e.mu.Unlock()
		return relayResult{}, true

	case r.Command == proto.RelayEnd:
		end, _ := proto.ParseEnd(r.Data) // malformed: reason 0, none given
		var refused func()
		e.mu.Lock()
		if s := e.streams[r.StreamID]; s != nil {
			s.peerEnded = true
			s.endReason = end.Reason
			if !s.connected {
				refused, s.refused = s.refused, nil
			}
			if s.localClosed {
				delete(e.streams, s.id)
			}
			s.cond.Broadcast()
		}
		e.mu.Unlock()
		if refused != nil {
			refused()
		}
		return relayResult{}, true

	case r.Command == proto.RelayDrop:
		return relayResult{}, true
	}
	return relayResult{}, false
}

// newStreamLocked registers a stream. Caller holds mu.
func (e *endpoint) newStreamLocked(id uint16, dest string) *Stream {
	s := &Stream{
		e:       e,
		id:      id,
		dest:    dest,
		sendWin: onion.NewSendWindow(e.sw.cfg.StreamWindow, e.sw.cfg.StreamIncrement, false),
		recvWin: onion.NewRecvWindow(e.sw.cfg.StreamWindow, e.sw.cfg.StreamIncrement),
	}
	s.cond.L = &e.mu
	if e.streams == nil {
		e.streams = make(map[uint16]*Stream) // most relayed circuits end elsewhere: no streams
	}
	e.streams[id] = s
	return s
}

// Stream IDs: the origin numbers the streams it opens 1..0x7fff, the last
// hop those it opens back towards the origin 0x8000..0xffff, so both may
// open streams at once without colliding.
const lastHopStreams = 0x8000

func (e *endpoint) ownStreamID(id uint16) bool {
	if e.origin {
		return id != 0 && id < lastHopStreams
	}
	return id >= lastHopStreams
}

// peerStreamID reports whether the other end may open stream id.
func (e *endpoint) peerStreamID(id uint16) bool {
	if e.origin {
		return id >= lastHopStreams
	}
	return id != 0 && id < lastHopStreams
}

// begin answers a BEGIN from the other end: the service registered under
// dest gets the stream in its own goroutine, otherwise END.
func (e *endpoint) begin(sid uint16, dest string) {
	sw := e.sw
	sw.mu.Lock()
	svc := sw.services[dest]
	sw.mu.Unlock()
	exit := svc == nil && !e.origin && sw.exitTakes(dest)
	e.mu.Lock()
	var s *Stream
	reason := uint8(0)
	switch {
	case e.closed:
		e.mu.Unlock()
		return
	case svc == nil && !exit:
		reason = EndNoService
	case e.streams[sid] != nil:
		reason = EndMisc
	case len(e.streams) >= sw.cfg.MaxStreams,
		!e.origin && len(e.streams) >= sw.cfg.MaxJoinedStreams:
		reason = EndResourceLimit
	default:
		s = e.newStreamLocked(sid, dest)
		s.connected = true
		sw.wg.Add(1) // our caller, a circuit goroutine, holds a count: no race with Wait
	}
	e.mu.Unlock()
	if s == nil {
		_ = e.sendControl(lastHop, false, proto.RelayEnd, sid, []byte{reason})
		return
	}
	go func() {
		defer sw.wg.Done()
		defer s.Close()
		if exit {
			e.serveExit(s, dest)
			return
		}
		if err := e.sendControl(lastHop, false, proto.RelayConnected, sid, nil); err != nil {
			return
		}
		svc(s)
	}()
}

// openStream sends BEGIN for dest to the other end and waits for CONNECTED.
func (e *endpoint) openStream(ctx context.Context, dest string) (*Stream, error) {
	s, err := e.beginStream(dest, 0, nil)
	if err != nil {
		return nil, err
	}
	id := s.id
	stop := context.AfterFunc(ctx, func() {
		e.mu.Lock()
		s.cond.Broadcast()
		e.mu.Unlock()
	})
	defer stop()
	e.mu.Lock()
	defer e.mu.Unlock()
	for !s.connected && !s.peerEnded && !e.closed && ctx.Err() == nil {
		s.cond.Wait()
	}
	switch {
	case s.connected:
		return s, nil
	case s.peerEnded:
		delete(e.streams, id)
		return nil, &RefusedError{Dest: dest, Reason: s.endReason}
	case e.closed:
		return nil, ErrCircuitClosed
	}
	s.localClosed = true
	e.mu.Unlock()
	_ = e.sendControl(lastHop, false, proto.RelayEnd, id, []byte{EndTimeout}) // best effort
	e.mu.Lock()
	delete(e.streams, id)
	return nil, ctx.Err()
}

// beginStream sends BEGIN for a new stream to dest and returns the
// stream without waiting for the answer. With lazy > 0, BEGIN waits for
// the stream's first data, which it then precedes in the same flight, or
// lazy at most. refused, if not nil, is called (once, on the circuit's
// goroutine) should the stream end before CONNECTED.
func (e *endpoint) beginStream(dest string, lazy time.Duration, refused func()) (*Stream, error) {
	b := proto.Begin{Dest: dest}
	if !b.Valid() {
		return nil, fmt.Errorf("circuits: stream destination of %d bytes", len(dest))
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, ErrCircuitClosed
	}
	if len(e.streams) >= e.sw.cfg.MaxStreams {
		e.mu.Unlock()
		return nil, ErrTooManyStreams
	}
	id := e.nextStream
	for !e.ownStreamID(id) || e.streams[id] != nil {
		id++
	}
	e.nextStream = id + 1
	s := e.newStreamLocked(id, dest)
	s.refused = refused
	e.mu.Unlock()

	if lazy > 0 {
		e.sendMu.Lock()
		s.begin = b.Append(nil)
		s.beginTimer = time.AfterFunc(lazy, func() {
			e.sendMu.Lock()
			defer e.sendMu.Unlock()
			_ = s.sendBeginLocked() // a failure ends the circuit: the stream sees it
		})
		e.sendMu.Unlock()
		return s, nil
	}
	if err := e.sendControl(lastHop, false, proto.RelayBegin, id, b.Append(nil)); err != nil {
		s.forget()
		return nil, err
	}
	return s, nil
}

// sendBeginLocked sends the stream's deferred BEGIN, if it has one.
// Caller holds sendMu.
func (s *Stream) sendBeginLocked() error {
	if s.begin == nil {
		return nil
	}
	e := s.e
	b := s.begin
	s.begin = nil
	s.beginTimer.Stop()
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return ErrCircuitClosed
	}
	c, _, err := e.seal(len(e.hops)-1, false, proto.RelayBegin, s.id, b)
	if err != nil {
		return err
	}
	e.stats.sent(0)
	return e.out.SendCell(c)
}

// Stream is one byte stream multiplexed on a circuit, between the origin
// and a service at the circuit's last hop. Read and Write may be called
// from different goroutines; it is an io.ReadWriteCloser. Writes block while
// the stream or circuit window is closed (a SENDME opens it), which is how a
// fast sender is held back by a slow reader.
type Stream struct {
	e    *endpoint
	id   uint16
	dest string
	cond sync.Cond // L is &e.mu

	// Guarded by e.sendMu: a BEGIN deferred until the first data (see
	// beginStream), and the timer that sends it anyway.
	begin      []byte
	beginTimer *time.Timer

	// Guarded by e.mu.
	sendWin     onion.SendWindow
	recvWin     onion.RecvWindow
	startCells  int      // cells it may send before the peer's first SENDME (0: the window's); SwitchConfig.ExitStartCells
	gotData     bool     // a data cell came: the first made the circuit's goroutine yield to the reader
	sentData    bool     // a data cell was sent: after the first, its sender yielded to the link's writer
	rq          []queued // received cells not yet read
	rqHead      int
	connected   bool
	localClosed bool
	peerEnded   bool
	endReason   uint8
	refused     func()      // called once if the stream ends before CONNECTED (beginStream)
	maxQueued   int         // high-water mark of len(rq), for tests and metrics
	deadline    time.Time   // for reads
	wdeadline   time.Time   // for writes
	rtimer      *time.Timer // wakes readers at deadline; one per stream, reset on each change
	wtimer      *time.Timer // wakes writers at wdeadline
}

type queued struct {
	c   *proto.Cell
	off int // next unread byte of the relay data
	n   int // relay data length
}

// OpenStream opens another stream on s's circuit, to the service dest at
// the other end: from the origin, at the last hop; from a service at the
// last hop, back at the origin (as an ORDB forwards a query to a peer
// through that peer's own circuit).
func (s *Stream) OpenStream(ctx context.Context, dest string) (*Stream, error) {
	return s.e.openStream(ctx, dest)
}

// ID is the stream's number on its circuit.
func (s *Stream) ID() uint16 { return s.id }

// Dest is the destination named in BEGIN.
func (s *Stream) Dest() string { return s.dest }

func (s *Stream) push(c *proto.Cell, n int) {
	s.e.pushed++
	s.rq = append(s.rq, queued{c: c, n: n})
	if q := len(s.rq) - s.rqHead; q > s.maxQueued {
		s.maxQueued = q
	}
	s.cond.Broadcast()
}

// popLocked drops the head of the receive queue (its cell already
// released). The live part of rq is bounded by the stream window, but a
// reader that never empties the queue would let the dead prefix grow with
// every cell the stream ever carried: it is compacted away once it is half
// the slice. Caller holds e.mu.
func (s *Stream) popLocked() {
	s.e.popped++
	s.rq[s.rqHead] = queued{}
	s.rqHead++
	switch {
	case s.rqHead == len(s.rq):
		s.rq, s.rqHead = s.rq[:0], 0
	case s.rqHead >= 32 && 2*s.rqHead >= len(s.rq):
		n := copy(s.rq, s.rq[s.rqHead:])
		clear(s.rq[n:])
		s.rq, s.rqHead = s.rq[:n], 0
	}
}

func (s *Stream) dropQueueLocked() {
	s.e.popped += uint32(len(s.rq) - s.rqHead)
	for i := s.rqHead; i < len(s.rq); i++ {
		proto.PutCell(s.rq[i].c)
	}
	s.rq, s.rqHead = nil, 0
}

func (s *Stream) forget() {
	s.e.mu.Lock()
	delete(s.e.streams, s.id)
	s.e.mu.Unlock()
}

// windowShutLocked reports whether no cell may go on s now: the circuit's
// or the stream's window is closed, or the stream sent its first flight
// (startCells) and waits for the peer's first SENDME. Caller holds e.mu.
func (s *Stream) windowShutLocked() bool {
	e := s.e
	return e.sendWin.Left() == 0 || s.sendWin.Left() == 0 ||
		s.startCells > 0 && e.sw.cfg.StreamWindow-s.sendWin.Left() >= s.startCells
}

func (s *Stream) writeErrLocked() error {
	switch {
	case s.localClosed:
		return ErrStreamClosed
	case s.e.closed:
		return ErrCircuitClosed
	case s.peerEnded:
		return io.ErrClosedPipe
	}
	return nil
}

// Read reads data the other end wrote. It returns io.EOF after the other
// end closed the stream and everything it sent was read.
func (s *Stream) Read(p []byte) (int, error) {
	e := s.e
	e.mu.Lock()
	for s.rqHead == len(s.rq) && !s.peerEnded && !s.localClosed && !e.closed && !e.past(s.deadline) {
		s.cond.Wait()
	}
	if s.rqHead == len(s.rq) {
		err := s.readErrLocked()
		e.mu.Unlock()
		return 0, err
	}
	n, sendmes := 0, 0
	for n < len(p) && s.rqHead < len(s.rq) {
		q := &s.rq[s.rqHead]
		data := q.c.Payload()[proto.RelayHeaderSize+q.off : proto.RelayHeaderSize+q.n]
		k := copy(p[n:], data)
		n += k
		q.off += k
		if q.off == q.n {
			proto.PutCell(q.c)
			s.popLocked()
			if s.recvWin.Consumed() {
				sendmes++
			}
		}
	}
	e.mu.Unlock()
	for range sendmes {
		if err := e.sendControl(lastHop, false, proto.RelaySendme, s.id, nil); err != nil {
			break
		}
	}
	return n, nil
}

// ReadCell reads the next received cell whole: its relay command (DATA or
// a DB_* command) and its data copied into buf, which must hold
// proto.RelayDataSize bytes. After a Read that took part of a cell, it
// returns the rest of that cell. Errors are Read's.
func (s *Stream) ReadCell(buf []byte) (proto.RelayCommand, int, error) {
	if len(buf) < proto.RelayDataSize {
		return 0, 0, io.ErrShortBuffer
	}
	e := s.e
	e.mu.Lock()
	for s.rqHead == len(s.rq) && !s.peerEnded && !s.localClosed && !e.closed && !e.past(s.deadline) {
		s.cond.Wait()
	}
	if s.rqHead == len(s.rq) {
		err := s.readErrLocked()
		e.mu.Unlock()
		return 0, 0, err
	}
	q := &s.rq[s.rqHead]
	p := q.c.Payload()
	cmd := proto.RelayCommand(p[0])
	n := copy(buf, p[proto.RelayHeaderSize+q.off:proto.RelayHeaderSize+q.n])
	proto.PutCell(q.c)
	s.popLocked()
	sendme := s.recvWin.Consumed()
	e.mu.Unlock()
	if sendme {
		_ = e.sendControl(lastHop, false, proto.RelaySendme, s.id, nil)
	}
	return cmd, n, nil
}

// readErrLocked is why a read found nothing: io.EOF after the peer's END.
func (s *Stream) readErrLocked() error {
	switch {
	case s.localClosed:
		return ErrStreamClosed
	case s.peerEnded:
		return io.EOF
	case s.e.closed:
		return ErrCircuitClosed
	}
	return errDeadline
}

// Write sends p as DATA cells of at most proto.RelayDataSize bytes.
func (s *Stream) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k := min(len(p)-n, proto.RelayDataSize)
		if err := s.e.sendData(s, proto.RelayData, p[n:n+k]); err != nil {
			return n, err
		}
		n += k
	}
	return n, nil
}

// WriteCell sends one cell of a data-bearing relay command (DATA or a DB_*
// message) with data of at most proto.RelayDataSize bytes: for protocols,
// like the ORDB's, that keep cell boundaries.
func (s *Stream) WriteCell(cmd proto.RelayCommand, data []byte) error {
	if !onion.CountsForFlow(cmd) {
		return fmt.Errorf("circuits: %v is not a data command", cmd)
	}
	return s.e.sendData(s, cmd, data)
}

// Close ends the stream (END DONE to the other end) and drops unread data.
// It is idempotent.
func (s *Stream) Close() error {
	e := s.e
	e.sendMu.Lock()
	unsent := s.begin != nil // the last hop never heard of the stream
	if unsent {
		s.begin = nil
		s.beginTimer.Stop()
	}
	e.sendMu.Unlock()
	e.mu.Lock()
	if s.localClosed {
		e.mu.Unlock()
		return nil
	}
	s.localClosed = true
	s.dropQueueLocked()
	sendEnd := !s.peerEnded && !e.closed && !unsent
	if s.peerEnded || unsent {
		delete(e.streams, s.id)
	}
	s.cond.Broadcast()
	e.mu.Unlock()
	if sendEnd {
		err := e.sendControl(lastHop, false, proto.RelayEnd, s.id, []byte{EndDone})
		e.mu.Lock()
		delete(e.streams, s.id)
		e.mu.Unlock()
		if err != nil && !errors.Is(err, ErrCircuitClosed) {
			return err
		}
	}
	return nil
}

// errDeadline is what Read and Write return once their deadline passed; it
// is a net.Error with Timeout() true, as net.Conn's are. Temporary is
// deprecated but still part of net.Error, so it stays.
var errDeadline error = deadlineError{}

var _ net.Error = deadlineError{}

type deadlineError struct{}

func (deadlineError) Error() string   { return "circuits: stream deadline exceeded" }
func (deadlineError) Timeout() bool   { return true }
func (deadlineError) Temporary() bool { return true }
func (deadlineError) Unwrap() error   { return context.DeadlineExceeded }

// SetReadDeadline makes Read fail once t has passed (zero: no deadline).
func (s *Stream) SetReadDeadline(t time.Time) error { return s.setDeadline(&s.deadline, &s.rtimer, t) }

// SetWriteDeadline makes Write fail once t has passed while it waits for
// a window to open (zero: no deadline).
func (s *Stream) SetWriteDeadline(t time.Time) error {
	return s.setDeadline(&s.wdeadline, &s.wtimer, t)
}

// SetDeadline sets both deadlines.
func (s *Stream) SetDeadline(t time.Time) error {
	s.SetReadDeadline(t)
	return s.SetWriteDeadline(t)
}

// setDeadline sets *d and replaces the timer *tm that wakes waiters when it
// passes, so moving a deadline often keeps a single timer alive.
func (s *Stream) setDeadline(d *time.Time, tm **time.Timer, t time.Time) error {
	e := s.e
	e.mu.Lock()
	defer e.mu.Unlock()
	*d = t
	if *tm != nil {
		(*tm).Stop()
		*tm = nil
	}
	if !t.IsZero() {
		// The timer only wakes the waiters; they judge the deadline by
		// the switch's clock (past), so a test clock decides.
		*tm = time.AfterFunc(t.Sub(e.sw.cfg.Now()), func() {
			e.mu.Lock()
			s.cond.Broadcast()
			e.mu.Unlock()
		})
	}
	s.cond.Broadcast()
	return nil
}

// past reports whether deadline t (zero: none) has passed on the switch's
// clock.
func (e *endpoint) past(t time.Time) bool { return !t.IsZero() && !e.sw.cfg.Now().Before(t) }

// StreamAddr names one end of a stream for net.Conn's LocalAddr and
// RemoteAddr: the local circuit handle, the stream ID and the destination.
// It carries no network address: that is the point of a circuit.
type StreamAddr struct {
	Circuit uint64 // the circuit's local handle (Circuit.ID, Event.Circuit)
	Stream  uint16 // the stream's ID on its circuit
	Dest    string // the destination its BEGIN named
}

// Network is "veil".
func (StreamAddr) Network() string { return "veil" }

// String says which circuit, stream and destination a names.
func (a StreamAddr) String() string {
	return fmt.Sprintf("circuit %d stream %d (%s)", a.Circuit, a.Stream, a.Dest)
}

// LocalAddr names the stream (a StreamAddr), as net.Conn asks.
func (s *Stream) LocalAddr() net.Addr { return StreamAddr{s.e.handle, s.id, s.dest} }

// RemoteAddr names the stream too: the other end has no address a circuit
// would reveal.
func (s *Stream) RemoteAddr() net.Addr { return StreamAddr{s.e.handle, s.id, s.dest} }

var _ net.Conn = (*Stream)(nil)

// queuedCells reports how many received cells wait to be read and the
// high-water mark (for tests and metrics).
func (s *Stream) queuedCells() (now, max int) {
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	return len(s.rq) - s.rqHead, s.maxQueued
}
