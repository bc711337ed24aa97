package link

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"veil/proto"
)

// Link errors. The error a link closed with is one of these, or wraps the
// proto or network error that ended it.
var (
	ErrClosed       = errors.New("link: closed")
	ErrClosedByPeer = errors.New("link: closed by peer")
	ErrIdleTimeout  = errors.New("link: idle timeout: nothing received")
	ErrWriteTimeout = errors.New("link: write timeout: peer accepts no data")
	ErrQueueFull    = errors.New("link: send queue full")
	ErrBadCell      = errors.New("link: cell cannot be sent")
	ErrPeerID       = errors.New("link: peer has the wrong ID")
)

// PeerIDError is the error of a dial that reached a node other than the one
// expected. It matches ErrPeerID with errors.Is.
type PeerIDError struct {
	Addr      string       // the address dialed
	Got, Want proto.NodeID // the ID the peer proved, the ID asked for
}

// Error names the address and both IDs.
func (e *PeerIDError) Error() string {
	return fmt.Sprintf("link: peer at %s has ID %s, want %s", e.Addr, e.Got, e.Want)
}

// Is makes errors.Is(err, ErrPeerID) true.
func (e *PeerIDError) Is(target error) bool { return target == ErrPeerID }

// Handlers receive what arrives on links. They are called from the
// link's read goroutine, one call at a time per link, in arrival order; a
// slow handler back-pressures its own link only. A nil field drops what it
// would have received. l is the link it arrived on: a *Link from Links (a
// *linktest.Conn on an in-memory network), on which answers go back.
type Handlers struct {
	// Cell receives a fixed cell other than PADDING. It owns c and must
	// eventually proto.PutCell it (or pass it on, e.g. to SendCell).
	Cell func(l Conn, c *proto.Cell)
	// Var receives a variable-length cell; v.Payload is valid only during
	// the call.
	Var func(l Conn, v proto.VarCell)
	// Closed is called once per link after its goroutines have finished,
	// with the reason (ErrClosed after a local Close). It must not call
	// Links.Close.
	Closed func(l Conn, err error)
}

// outItem is one queued cell: a pooled fixed cell or an encoded var cell.
type outItem struct {
	cell *proto.Cell
	buf  []byte
}

func (it outItem) size() int {
	if it.cell != nil {
		return proto.CellSize
	}
	return len(it.buf)
}

func (it outItem) release() {
	if it.cell != nil {
		proto.PutCell(it.cell)
	}
}

// Link is one authenticated TLS connection to a peer node. Its methods are
// safe for concurrent use. Links are made by Links (Listen, Get).
type Link struct {
	m       *Links
	cfg     Config
	h       Handlers
	conn    *tls.Conn
	raw     *deadlineConn
	peer    proto.NodeID
	peerKey ed25519.PublicKey
	inbound bool
	subnet  netip.Prefix // an inbound link's slot in Links.perSubnet

	mu        sync.Mutex // guards the fields below
	notFull   sync.Cond  // signalled when queued drops or the link closes
	queue     []outItem  // cells accepted and not yet taken by the writer
	queued    int        // bytes accepted and not yet handed to the TLS writer
	idle      bool       // the writer sleeps and must be woken
	waiting   int        // senders blocked on a full queue
	closed    bool
	err       error
	killTimer *time.Timer

	wake    chan struct{} // cap 1: wakes the writer
	quit    chan struct{} // closed when the link starts closing
	done    chan struct{} // closed when both goroutines have returned
	running atomic.Int32
	loss    atomic.Bool // the close is not graceful: drop queued cells
	closing atomic.Bool // closed is set: the reader stops dispatching
}

func newLink(m *Links, conn *tls.Conn, raw *deadlineConn, peerKey ed25519.PublicKey, inbound bool) *Link {
	l := &Link{
		m:       m,
		cfg:     m.cfg,
		h:       m.h,
		conn:    conn,
		raw:     raw,
		peer:    proto.NodeIDFromKey(peerKey),
		peerKey: peerKey,
		inbound: inbound,
		wake:    make(chan struct{}, 1),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	l.notFull.L = &l.mu
	return l
}

// start runs the link's reader and writer.
func (l *Link) start() {
	l.raw.idle.Store(int64(l.cfg.IdleTimeout))
	l.raw.write.Store(int64(l.cfg.WriteTimeout))
	l.running.Store(2)
	go l.readLoop()
	go l.writeLoop()
}

// Peer returns the authenticated ID of the node at the other end.
func (l *Link) Peer() proto.NodeID { return l.peer }

// PeerKey returns the peer's Ed25519 identity key, taken from its
// certificate during the TLS handshake.
func (l *Link) PeerKey() ed25519.PublicKey { return l.peerKey }

// RemoteAddr returns the peer's network address.
func (l *Link) RemoteAddr() net.Addr { return l.raw.RemoteAddr() }

// LocalAddr returns this end's network address.
func (l *Link) LocalAddr() net.Addr { return l.raw.LocalAddr() }

// Inbound reports whether the peer dialed us.
func (l *Link) Inbound() bool { return l.inbound }

// QueuedBytes returns the bytes accepted by SendCell/SendVar and not yet
// handed to TLS. It never exceeds Config.SendQueueBytes.
func (l *Link) QueuedBytes() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.queued
}

// Err returns why the link closed, or nil while it is open.
func (l *Link) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Done is closed once the link has closed and its goroutines returned.
func (l *Link) Done() <-chan struct{} { return l.done }

// SendCell queues c for the peer, blocking while the send queue is full. It
// takes ownership of c in every case: c returns to the pool once written,
// or at once on error. It fails after the link closed, and for a cell whose
// command is unknown or variable-length.
func (l *Link) SendCell(c *proto.Cell) error {
	if cmd := c.Command(); !cmd.Known() || cmd.IsVariable() {
		proto.PutCell(c)
		return fmt.Errorf("%w: command %v in a fixed cell", ErrBadCell, cmd)
	}
	return l.enqueue(outItem{cell: c}, true, nil)
}

// Stopper tells a sender waiting for room on a link to give up.
type Stopper interface {
	// Stop reports whether the sender should give up now.
	Stop() bool
}

// ErrSendStopped is SendCellUnless's error when its Stopper said stop.
var ErrSendStopped = errors.New("link: send given up: the sender was stopped")

// SendCellUnless is SendCell that gives up, releasing c and failing with
// ErrSendStopped, when stop.Stop() is true while it would wait for room
// (it is asked before each wait and after each wake-up; WakeSenders wakes
// the waiters to ask again). A relayed circuit stuck behind a full link
// that its switch has condemned thus lets go of the cells it holds.
func (l *Link) SendCellUnless(c *proto.Cell, stop Stopper) error {
	if cmd := c.Command(); !cmd.Known() || cmd.IsVariable() {
		proto.PutCell(c)
		return fmt.Errorf("%w: command %v in a fixed cell", ErrBadCell, cmd)
	}
	return l.enqueue(outItem{cell: c}, true, stop)
}

// WakeSenders wakes the senders waiting for room on l, so that those
// whose Stopper now says stop give up.
func (l *Link) WakeSenders() {
	l.mu.Lock()
	l.notFull.Broadcast()
	l.mu.Unlock()
}

// TrySendCell is SendCell without blocking: it fails with ErrQueueFull
// (and releases c) when the queue has no room. Relays use it to avoid
// waiting on one link while reading another.
func (l *Link) TrySendCell(c *proto.Cell) error {
	if cmd := c.Command(); !cmd.Known() || cmd.IsVariable() {
		proto.PutCell(c)
		return fmt.Errorf("%w: command %v in a fixed cell", ErrBadCell, cmd)
	}
	return l.enqueue(outItem{cell: c}, false, nil)
}

// SendVar queues a variable-length cell, copying v.Payload. It blocks while
// the send queue is full.
func (l *Link) SendVar(v proto.VarCell) error {
	if !v.Command.Known() || !v.Command.IsVariable() {
		return fmt.Errorf("%w: command %v in a variable cell", ErrBadCell, v.Command)
	}
	if len(v.Payload) > proto.MaxVarPayload {
		return fmt.Errorf("%w: var cell payload %d > %d", ErrBadCell, len(v.Payload), proto.MaxVarPayload)
	}
	return l.enqueue(outItem{buf: v.Append(make([]byte, 0, v.Len()))}, true, nil)
}

// SendVarContext is SendVar giving up when ctx ends while the send queue
// is full, so a peer that stops reading cannot hold the sender forever.
func (l *Link) SendVarContext(ctx context.Context, v proto.VarCell) error {
	if !v.Command.Known() || !v.Command.IsVariable() || len(v.Payload) > proto.MaxVarPayload {
		return fmt.Errorf("%w: var cell %v of %d bytes", ErrBadCell, v.Command, len(v.Payload))
	}
	stop := context.AfterFunc(ctx, func() {
		l.mu.Lock()
		l.notFull.Broadcast()
		l.mu.Unlock()
	})
	defer stop()
	return l.enqueueCtx(ctx, outItem{buf: v.Append(make([]byte, 0, v.Len()))}, true, nil)
}

func (l *Link) enqueue(it outItem, block bool, stop Stopper) error {
	return l.enqueueCtx(nil, it, block, stop)
}

// enqueueCtx queues it; a blocking call with a ctx stops waiting when ctx
// ends (its AfterFunc wakes the wait).
func (l *Link) enqueueCtx(ctx context.Context, it outItem, block bool, stop Stopper) error {
	n := it.size()
	l.mu.Lock()
	for !l.closed && l.queued+n > l.cfg.SendQueueBytes {
		if ctx != nil && ctx.Err() != nil {
			l.mu.Unlock()
			it.release()
			return fmt.Errorf("link: sending to %s: %w", l.peer.Short(), ctx.Err())
		}
		if !block {
			l.mu.Unlock()
			it.release()
			return ErrQueueFull
		}
		if stop != nil && stop.Stop() {
			l.mu.Unlock()
			it.release()
			return ErrSendStopped
		}
		l.waiting++
		l.notFull.Wait()
		l.waiting--
	}
	if l.closed {
		err := l.err
		l.mu.Unlock()
		it.release()
		return fmt.Errorf("link: sending to %s: %w", l.peer.Short(), err)
	}
	l.queue = append(l.queue, it)
	l.queued += n
	wake := l.idle
	l.idle = false
	l.mu.Unlock()
	if wake {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// Close starts a clean close: handlers get nothing more, the writer flushes
// what is queued, sends TLS close_notify and half-closes TCP, and the
// reader drains until the peer closes its side; CloseTimeout bounds it all.
// The peer sees ErrClosedByPeer. Close does not wait (it is safe to call
// from a handler); wait on Done for the goroutines to return. Idempotent.
func (l *Link) Close() error {
	l.shutdown(ErrClosed, true)
	return nil
}

// shutdown closes the link with err as its reason. A graceful shutdown
// lets the writer flush; otherwise the connection is cut at once.
func (l *Link) shutdown(err error, graceful bool) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed, l.err = true, err
	l.closing.Store(true)
	if graceful {
		l.killTimer = time.AfterFunc(l.cfg.CloseTimeout, func() { _ = l.raw.Close() })
	} else {
		l.loss.Store(true)
	}
	l.notFull.Broadcast()
	l.mu.Unlock()
	close(l.quit)
	if !graceful {
		// Cut the socket without TLS close_notify: sending it could block
		// on a peer that reads nothing. The peer sees the connection end.
		_ = l.raw.Close()
	}
}

// exit is called by each of the two goroutines as it returns; the last one
// unregisters the link and reports its end.
func (l *Link) exit() {
	if l.running.Add(-1) != 0 {
		return
	}
	l.mu.Lock()
	if l.killTimer != nil {
		l.killTimer.Stop()
	}
	err := l.err
	l.mu.Unlock()
	_ = l.raw.Close()
	l.m.remove(l)
	close(l.done)
	if l.h.Closed != nil {
		l.h.Closed(l, err)
	}
	l.m.wg.Done()
}

// writeLoop owns the write side: it takes the whole queue at once, copies
// the cells into a buffered writer so many share a TLS record, and sends
// the buffer's records in one write call when it is full and once the
// batch is written. It does not go back for more before flushing: while
// producers keep the queue from emptying, that held a link's first cells
// until 64 KiB had gathered behind them, at every hop.
func (l *Link) writeLoop() {
	defer l.exit()
	bw := bufio.NewWriterSize(l.conn, l.cfg.WriteBufferSize)
	l.raw.startBatching(l.cfg.WriteBufferSize)
	// Ticking at half the interval with a "wrote since the last tick" flag
	// bounds the silence between writes by KeepaliveInterval.
	ticker := time.NewTicker(l.cfg.KeepaliveInterval / 2)
	defer ticker.Stop()
	var batch []outItem
	wrote := false // something was written since the last tick
	var err error
	for {
		l.mu.Lock()
		batch, l.queue = l.queue, batch[:0]
		closed := l.closed
		refill := len(batch) == 0 && !closed && l.waiting > 0
		if len(batch) == 0 && !closed && !refill {
			l.idle = true
		}
		l.mu.Unlock()
		if refill {
			// Senders blocked on the full queue were woken but have not
			// run yet (they wait on this P): let them refill rather than
			// flush a partial buffer and sleep.
			runtime.Gosched()
			continue
		}

		if len(batch) > 0 {
			if l.loss.Load() {
				err = ErrClosed
			} else {
				// A limited node paces the batch a piece at a time: the
				// bucket is shared by all its links, and a batch taken
				// whole (up to SendQueueBytes) would make a cell another
				// link sends next wait for all of it.
				for rest := batch; len(rest) > 0 && err == nil; {
					part := rest[:l.piece(rest)]
					rest = rest[len(part):]
					if err = l.pace(bw, part); err == nil {
						err = l.writeBatch(bw, part)
					}
				}
				wrote = true
			}
			for i := range batch {
				batch[i] = outItem{}
			}
			if err == nil {
				err = l.flush(bw)
			}
			if err != nil {
				break
			}
			continue
		}
		if closed {
			break
		}
		if err = l.flush(bw); err != nil {
			break
		}
		select {
		case <-l.wake:
		case <-l.quit:
		case <-ticker.C:
			if !wrote {
				_, err = bw.Write(paddingCell[:])
			}
			if err == nil {
				// Also sends what TLS wrote on its own (a KeyUpdate).
				err = l.flush(bw)
			}
			wrote = false
		}
		if err != nil {
			break
		}
	}
	if err == nil {
		// Graceful close: everything queued is written; say goodbye with
		// TLS close_notify and a TCP half-close. The reader keeps draining
		// until the peer closes too (or CloseTimeout), so no unread data
		// turns our close into a reset the peer would see as an error.
		err = l.flush(bw)
		if err == nil {
			if l.conn.CloseWrite() == nil {
				_ = l.raw.flush()
			}
			if hc, ok := l.raw.Conn.(interface{ CloseWrite() error }); ok {
				_ = hc.CloseWrite()
			}
		}
	}
	if err != nil {
		l.shutdown(l.writeErr(err), false)
	}
	// No cell can be queued after closed is set; release what is left.
	l.mu.Lock()
	rest := l.queue
	l.queue = nil
	l.queued = 0
	l.mu.Unlock()
	for _, it := range rest {
		it.release()
	}
}

var paddingCell proto.Cell // CircID 0, PADDING, zero payload

// pacePiece is the most a link of a limited node (Config.WriteLimit)
// takes from the node's bucket at once. Its links share the bucket, first
// come first served, so a cell queued on one link waits at most for the
// pieces the others took before it: 16 KiB is 2 ms at 8 MB/s, where a
// whole batch (SendQueueBytes, 256 KiB) would be 32 ms, on every hop, and
// the stream's SENDMEs and the next queries of a circuit travel in the
// direction opposite to its bulk through the same relays.
const pacePiece = 16 << 10

// piece returns how many items of batch the next paced write takes: at
// least one, and no more than pacePiece bytes unless the first is larger.
func (l *Link) piece(batch []outItem) int {
	if l.cfg.WriteLimit == nil {
		return len(batch)
	}
	n := 0
	for i, it := range batch {
		if n += it.size(); n > pacePiece && i > 0 {
			return i
		}
	}
	return len(batch)
}

// pace waits, when the node limits its links' writes, until batch may be
// written; what is buffered goes out first. Closing the link ends the
// wait: what is left is written as Close flushes.
func (l *Link) pace(bw *bufio.Writer, batch []outItem) error {
	lim := l.cfg.WriteLimit
	if lim == nil {
		return nil
	}
	n := 0
	for _, it := range batch {
		n += it.size()
	}
	d := lim.reserve(n, time.Now())
	if d <= 0 {
		return nil
	}
	if err := l.flush(bw); err != nil {
		return err
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-l.quit:
	}
	return nil
}

// writeBatch hands batch to the buffered writer, sending each buffer's
// worth as it fills and releasing the queue bytes as they go, so senders
// refill while TLS works.
func (l *Link) writeBatch(bw *bufio.Writer, batch []outItem) error {
	var err error
	done := 0 // bytes written and not yet released from the queue count
	for _, it := range batch {
		if err == nil {
			b := it.buf
			if it.cell != nil {
				b = it.cell[:]
			}
			if bw.Available() < len(b) && bw.Buffered() > 0 {
				// A full buffer goes to the socket now, in one write,
				// rather than wait in the connection for the next flush.
				err = l.flush(bw)
			}
			if err == nil {
				_, err = bw.Write(b)
			}
			if err == nil && bw.Buffered() == 0 {
				err = l.raw.flush() // b was larger than the buffer: TLS took it directly
			}
		}
		it.release()
		done += it.size()
		if done >= l.cfg.WriteBufferSize/2 {
			l.release(done)
			done = 0
		}
	}
	l.release(done)
	return err
}

func (l *Link) release(n int) {
	if n == 0 {
		return
	}
	l.mu.Lock()
	l.queued -= n
	l.notFull.Broadcast()
	l.mu.Unlock()
}

func (l *Link) writeErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ErrWriteTimeout
	}
	return fmt.Errorf("link: writing to %s: %w", l.peer.Short(), err)
}

// flush hands what bw holds to TLS, and the TLS records to the socket in
// one write.
func (l *Link) flush(bw *bufio.Writer) error {
	if err := bw.Flush(); err != nil {
		return err
	}
	return l.raw.flush()
}

// readLoop owns the read side: it frames cells and calls the handlers.
func (l *Link) readLoop() {
	defer l.exit()
	err := l.read(l.conn)
	l.shutdown(err, false)
}

// read frames cells from src with proto's CellReader and hands them to
// the handlers until an error, which it returns. A fixed cell goes to the
// Cell handler in a pooled cell that the handler then owns; PADDING and
// cells arriving once the link is closing reuse the same cell.
func (l *Link) read(src io.Reader) error {
	r := proto.NewCellReader(src, l.cfg.ReadBufferSize)
	c := proto.GetCell()
	for {
		v, isVar, err := r.ReadCell(c)
		if err != nil {
			proto.PutCell(c)
			return l.readErr(err)
		}
		if isVar {
			if l.h.Var != nil && !l.closing.Load() {
				l.h.Var(l, v)
			}
			continue
		}
		if c.Command() == proto.CmdPadding || l.h.Cell == nil || l.closing.Load() {
			continue
		}
		l.h.Cell(l, c)
		c = proto.GetCell()
	}
}

// readErr names why reading stopped.
func (l *Link) readErr(err error) error {
	l.mu.Lock()
	closed, cause := l.closed, l.err
	l.mu.Unlock()
	if closed {
		return cause // we closed it; the read error is a consequence
	}
	var ne net.Error
	switch {
	case err == io.EOF: // between two cells
		return ErrClosedByPeer
	case errors.As(err, &ne) && ne.Timeout():
		return ErrIdleTimeout
	}
	return fmt.Errorf("link: reading from %s: %w", l.peer.Short(), err)
}

// deadlineConn is the TCP connection under TLS. It renews the read and
// write deadlines before each socket operation, so an idle or stuck link
// times out without a timer per cell; a zero duration leaves the deadline
// alone (during the handshake).
//
// Once the link runs, it also gathers TLS's writes: TLS writes each record
// (at most 16 KiB) with its own call, and a flush of the link's write
// buffer makes several records; they collect here and go to the socket in
// one write on flush, so a full write buffer costs one system call, not
// four. Writes block only in flush; the error of a gathered write is
// flush's.
type deadlineConn struct {
	net.Conn
	idle, write atomic.Int64 // time.Duration
	traffic     *traffic     // nil: not counted

	wmu  sync.Mutex // guards wbuf: TLS may write from the reader (KeyUpdate)
	wbuf []byte     // gathered records; nil before startBatching
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	if d := time.Duration(c.idle.Load()); d > 0 {
		_ = c.Conn.SetReadDeadline(time.Now().Add(d))
	}
	n, err := c.Conn.Read(p)
	if c.traffic != nil && n > 0 {
		c.traffic.read.Add(uint64(n))
	}
	return n, err
}

// startBatching makes writes gather until flush, in a buffer that holds a
// write buffer's worth of cells in TLS records.
func (c *deadlineConn) startBatching(size int) {
	c.wmu.Lock()
	// Records add a 5-byte header and a 17-byte tag per 16 KiB.
	c.wbuf = make([]byte, 0, size+(size/16384+1)*32)
	c.wmu.Unlock()
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wbuf == nil {
		return c.writeNow(p)
	}
	if len(c.wbuf)+len(p) > cap(c.wbuf) {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > cap(c.wbuf) {
			return c.writeNow(p)
		}
	}
	c.wbuf = append(c.wbuf, p...)
	return len(p), nil
}

// flush writes the gathered records.
func (c *deadlineConn) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.flushLocked()
}

func (c *deadlineConn) flushLocked() error {
	if len(c.wbuf) == 0 {
		return nil
	}
	_, err := c.writeNow(c.wbuf)
	c.wbuf = c.wbuf[:0]
	return err
}

func (c *deadlineConn) writeNow(p []byte) (int, error) {
	if d := time.Duration(c.write.Load()); d > 0 {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(d))
	}
	n, err := c.Conn.Write(p)
	if c.traffic != nil && n > 0 {
		c.traffic.written.Add(uint64(n))
	}
	return n, err
}
