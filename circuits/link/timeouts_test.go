package link

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"veil/proto"
)

// The tests in this file run in testing/synctest bubbles: links run over
// net.Pipe, whose blocking and deadlines are on the bubble's fake clock, so
// timeouts of minutes take no real time and are checked to the tick.

// pipeNode is a Links with no listener whose links are made over net.Pipe
// by pipeLink and rawPipePeer; its handlers report what happens, with the
// (fake) time it happened.
type pipeNode struct {
	id     *identity
	m      *Links
	cells  chan *proto.Cell
	closed chan timedClose
}

type timedClose struct {
	l   Conn
	err error
	at  time.Time
}

func newPipeNode(t *testing.T, cfg Config) *pipeNode {
	t.Helper()
	n := &pipeNode{
		id:     newIdentity(t),
		cells:  make(chan *proto.Cell, 1024),
		closed: make(chan timedClose, 16),
	}
	n.m = NewLinks(n.id.Key, cfg)
	n.m.SetHandlers(Handlers{
		Cell:   func(l Conn, c *proto.Cell) { n.cells <- c },
		Closed: func(l Conn, err error) { n.closed <- timedClose{l, err, time.Now()} },
	})
	t.Cleanup(func() { n.m.Close() })
	return n
}

// acceptPipe runs the listener side of a handshake on conn, as the accept
// loop does for a TCP connection.
func (n *pipeNode) acceptPipe(t *testing.T, conn net.Conn) {
	t.Helper()
	if err := n.m.reserveIn(netip.Prefix{}); err != nil {
		t.Fatal(err)
	}
	n.m.wg.Add(1)
	go n.m.accept(conn, netip.Prefix{})
}

// pipeLink links d (dialing) to a over net.Pipe and returns both ends.
func pipeLink(t *testing.T, d, a *pipeNode) (dl, al *Link) {
	t.Helper()
	c1, c2 := net.Pipe()
	a.acceptPipe(t, c2)
	d.m.mu.Lock()
	err := d.m.reserveOutLocked()
	d.m.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	dl, err = d.m.handshake(context.Background(), c1, a.id.ID, "pipe")
	if err != nil {
		t.Fatal(err)
	}
	synctest.Wait() // the listener registers its end
	if al = a.m.Lookup(d.id.ID); al == nil {
		t.Fatal("listener has no link")
	}
	return dl, al
}

// rawPipePeer completes a handshake with n as a TLS client with a valid
// identity and returns the client connection, for the test to drive.
func rawPipePeer(t *testing.T, n *pipeNode) *tls.Conn {
	t.Helper()
	c1, c2 := net.Pipe()
	n.acceptPipe(t, c2)
	cert, err := linkCertificate(newIdentity(t).Key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	conn := tls.Client(c1, linkTLSConfig(cert))
	if err := conn.Handshake(); err != nil {
		t.Fatal(err)
	}
	synctest.Wait() // n registers the link
	t.Cleanup(func() { c1.Close() })
	return conn
}

// arrival is a cell a raw peer read, and when.
type arrival struct {
	cmd proto.Command
	at  time.Time
}

// readAll reads cells from conn until it fails, reporting each on the
// returned channel (closed at the end, after the error).
func readAll(conn io.Reader) (<-chan arrival, <-chan error) {
	got := make(chan arrival, 1024)
	end := make(chan error, 1)
	go func() {
		r := proto.NewCellReader(conn, 0)
		var c proto.Cell
		for {
			v, isVar, err := r.ReadCell(&c)
			if err != nil {
				close(got)
				end <- err
				return
			}
			cmd := c.Command()
			if isVar {
				cmd = v.Command
			}
			got <- arrival{cmd, time.Now()}
		}
	}()
	return got, end
}

// onlyLink returns n's one link.
func (n *pipeNode) onlyLink(t *testing.T) *Link {
	t.Helper()
	n.m.mu.Lock()
	defer n.m.mu.Unlock()
	if len(n.m.all) != 1 {
		t.Fatalf("%d links, want 1", len(n.m.all))
	}
	for l := range n.m.all {
		return l
	}
	return nil
}

func nextClose(t *testing.T, n *pipeNode) timedClose {
	t.Helper()
	select {
	case ev := <-n.closed:
		return ev
	default:
		t.Fatal("no link closed")
		return timedClose{}
	}
}

func noClose(t *testing.T, n *pipeNode, what string) {
	t.Helper()
	select {
	case ev := <-n.closed:
		t.Fatalf("%s: a link closed at %v: %v", what, ev.at, ev.err)
	default:
	}
}

// A link on which nothing arrives is closed exactly IdleTimeout after the
// last bytes came in, while its writer kept sending PADDING no more than
// KeepaliveInterval apart; a link between two Links stays up however long
// it is idle, and no PADDING reaches a handler.
func TestLinkKeepaliveAndIdleTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		a := newPipeNode(t, cfg)
		b := newPipeNode(t, cfg)
		ab, ba := pipeLink(t, a, b)

		silent := rawPipePeer(t, a) // reads, never writes
		start := time.Now()
		got, end := readAll(silent)

		time.Sleep(cfg.IdleTimeout - time.Nanosecond)
		noClose(t, a, "just before IdleTimeout")
		synctest.Wait()
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		ev := nextClose(t, a)
		if !errors.Is(ev.err, ErrIdleTimeout) || ev.l.Peer() == b.id.ID {
			t.Fatalf("silent peer's link closed with %v", ev.err)
		}
		if d := ev.at.Sub(start); d != cfg.IdleTimeout {
			t.Fatalf("closed after %v, want IdleTimeout %v", d, cfg.IdleTimeout)
		}
		// What the silent peer got: PADDING only, never KeepaliveInterval
		// apart or more, then the end.
		last, n := start, 0
		for c := range got {
			if c.cmd != proto.CmdPadding {
				t.Fatalf("silent peer got a %v cell", c.cmd)
			}
			if gap := c.at.Sub(last); gap > cfg.KeepaliveInterval {
				t.Fatalf("%v without a cell before the PADDING at %v", gap, c.at.Sub(start))
			}
			last = c.at
			n++
		}
		if n < int(cfg.IdleTimeout/cfg.KeepaliveInterval) {
			t.Fatalf("%d PADDING cells in %v", n, cfg.IdleTimeout)
		}
		if err := <-end; err == nil {
			t.Fatal("silent peer's read ended without an error")
		}

		// The two Links kept their link up with PADDING for ten idle
		// timeouts; none reached a handler.
		time.Sleep(10 * cfg.IdleTimeout)
		noClose(t, a, "idle link, dialer")
		noClose(t, b, "idle link, listener")
		if ab.Err() != nil || ba.Err() != nil || len(a.cells)+len(b.cells) != 0 {
			t.Fatalf("idle link: %v, %v, %d cells", ab.Err(), ba.Err(), len(a.cells)+len(b.cells))
		}
	})
}

// A writer that writes cells sends no PADDING: keepalives cost nothing on
// a busy link.
func TestLinkNoKeepaliveWhileBusy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.IdleTimeout = 10 * time.Minute // the peer is silent for 6
		a := newPipeNode(t, cfg)
		peer := rawPipePeer(t, a)
		got, _ := readAll(peer)
		l := a.onlyLink(t)
		const cells = 20
		for i := range cells {
			if err := l.SendCell(makeCell(uint32(i), proto.CmdRelay, 0)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(cfg.KeepaliveInterval / 4)
		}
		synctest.Wait()
		for range cells {
			if c := <-got; c.cmd != proto.CmdRelay {
				t.Fatalf("busy link sent %v", c.cmd)
			}
		}
		// Then, quiet, it pads again within KeepaliveInterval.
		quiet := time.Now()
		time.Sleep(cfg.KeepaliveInterval)
		synctest.Wait()
		if c := <-got; c.cmd != proto.CmdPadding || c.at.Sub(quiet) > cfg.KeepaliveInterval {
			t.Fatalf("quiet link: %v after %v", c.cmd, c.at.Sub(quiet))
		}
		peer.Close()
	})
}

// A link whose peer reads nothing closes WriteTimeout after the write
// that got stuck.
func TestLinkWriteTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		a := newPipeNode(t, cfg)
		rawPipePeer(t, a) // reads nothing: net.Pipe has no buffer
		l := a.onlyLink(t)
		start := time.Now()
		if err := l.SendCell(makeCell(1, proto.CmdRelay, 0)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(cfg.WriteTimeout - time.Nanosecond)
		noClose(t, a, "just before WriteTimeout")
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		ev := nextClose(t, a)
		if !errors.Is(ev.err, ErrWriteTimeout) {
			t.Fatalf("closed with %v, want ErrWriteTimeout", ev.err)
		}
		if d := ev.at.Sub(start); d != cfg.WriteTimeout {
			t.Fatalf("closed after %v, want WriteTimeout %v", d, cfg.WriteTimeout)
		}
	})
}

// Close flushes for at most CloseTimeout: against a peer that reads nothing,
// or one that reads but never closes its side, the link ends CloseTimeout
// after Close; against a Links it ends at once.
func TestLinkCloseTimeout(t *testing.T) {
	for _, peerReads := range []bool{false, true} {
		name := map[bool]string{false: "peer reads nothing", true: "peer never closes"}[peerReads]
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := DefaultConfig()
				a := newPipeNode(t, cfg)
				peer := rawPipePeer(t, a)
				var got <-chan arrival
				var end <-chan error
				if peerReads {
					got, end = readAll(peer)
				}
				l := a.onlyLink(t)
				const cells = 10
				for i := range cells {
					if err := l.SendCell(makeCell(uint32(i), proto.CmdRelay, 0)); err != nil {
						t.Fatal(err)
					}
				}
				start := time.Now()
				l.Close()
				time.Sleep(cfg.CloseTimeout - time.Nanosecond)
				noClose(t, a, "just before CloseTimeout")
				time.Sleep(time.Nanosecond)
				synctest.Wait()
				ev := nextClose(t, a)
				if !errors.Is(ev.err, ErrClosed) || ev.at.Sub(start) != cfg.CloseTimeout {
					t.Fatalf("closed with %v after %v, want ErrClosed after %v", ev.err, ev.at.Sub(start), cfg.CloseTimeout)
				}
				if peerReads {
					// Everything queued before Close was flushed, then
					// close_notify.
					n := 0
					for c := range got {
						if c.cmd == proto.CmdRelay {
							n++
						}
					}
					if err := <-end; n != cells || err != io.EOF {
						t.Fatalf("peer got %d of %d cells, then %v", n, cells, err)
					}
				}
			})
		})
	}
	t.Run("Links peer", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			cfg := DefaultConfig()
			a, b := newPipeNode(t, cfg), newPipeNode(t, cfg)
			ab, _ := pipeLink(t, a, b)
			start := time.Now()
			ab.Close()
			synctest.Wait()
			ev := nextClose(t, a)
			if !errors.Is(ev.err, ErrClosed) || ev.at != start {
				t.Fatalf("closed with %v after %v", ev.err, ev.at.Sub(start))
			}
			if ev := nextClose(t, b); !errors.Is(ev.err, ErrClosedByPeer) || ev.at != start {
				t.Fatalf("peer saw %v after %v", ev.err, ev.at.Sub(start))
			}
		})
	})
}

// Links.Close aborts handshakes in progress instead of waiting out
// HandshakeTimeout.
func TestLinksCloseAbortsHandshakes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		a := newPipeNode(t, cfg)
		for range 3 {
			c1, c2 := net.Pipe() // a client that never says anything
			defer c1.Close()
			a.acceptPipe(t, c2)
		}
		synctest.Wait()
		a.m.mu.Lock()
		pending := a.m.pendingIn
		a.m.mu.Unlock()
		if pending != 3 {
			t.Fatalf("%d handshakes pending, want 3", pending)
		}
		start := time.Now()
		a.m.Close()
		if d := time.Since(start); d != 0 {
			t.Fatalf("Close took %v", d)
		}
	})
}

// The send queue is bounded: against a peer whose handler stalls, SendCell
// blocks once SendQueueBytes are queued, TrySendCell fails, and Close
// releases the blocked sender.
func TestLinkSendQueueBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.SendQueueBytes = 16 << 10
		release := make(chan struct{})
		var got int
		a := newPipeNode(t, cfg)
		a.m.SetHandlers(Handlers{Cell: func(l Conn, c *proto.Cell) {
			got++
			proto.PutCell(c)
			<-release // stop reading
		}})
		b := newPipeNode(t, cfg)
		l, _ := pipeLink(t, b, a)

		const attempts = 10_000 // ~5 MB if nothing blocked
		sent := 0
		sendErr := make(chan error, 1)
		go func() {
			for range attempts {
				if err := l.SendCell(makeCell(1, proto.CmdRelay, 0)); err != nil {
					sendErr <- err
					return
				}
				sent++
			}
			sendErr <- nil
		}()
		synctest.Wait() // everyone is blocked: reader, writer, sender
		select {
		case err := <-sendErr:
			t.Fatalf("sender finished while the peer was not reading: %v", err)
		default:
		}
		if q := l.QueuedBytes(); q > cfg.SendQueueBytes || q <= cfg.SendQueueBytes-proto.CellSize {
			t.Fatalf("queued %d bytes of %d with the sender blocked", q, cfg.SendQueueBytes)
		}
		if sent >= attempts/10 {
			t.Fatalf("%d cells accepted", sent)
		}
		if err := l.TrySendCell(makeCell(1, proto.CmdRelay, 0)); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("TrySendCell on a full queue: %v", err)
		}
		// Closing the link releases the blocked sender with an error.
		l.Close()
		if err := <-sendErr; !errors.Is(err, ErrClosed) {
			t.Fatalf("blocked SendCell after Close: %v", err)
		}
		if got != 1 {
			t.Fatalf("stalled receiver handled %d cells", got)
		}
		close(release)
	})
}
