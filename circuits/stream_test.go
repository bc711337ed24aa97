package circuits

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"veil/proto"
)

// A writer faster than its reader stops once it has used the stream
// window: run in fake time over in-memory links, synctest.Wait proves that
// nothing more moves while the reader holds back (every goroutine is
// blocked), rather than hoping a pause was long enough.
func TestFastSenderHeldBackBySendme(t *testing.T) {
	synctest.Test(t, testFastSenderHeldBackBySendme)
}

func testFastSenderHeldBackBySendme(t *testing.T) {
	nodes := newMemNodes(t, 4)
	accepted := make(chan *Stream, 1)
	release := make(chan struct{})
	got := make(chan []byte, 1)
	nodes[3].sw.Handle("slow", func(s *Stream) {
		accepted <- s
		<-release // a reader that does not read yet
		b, _ := io.ReadAll(s)
		got <- b
	})
	c := build(t, nodes[0], nodes[1], nodes[2], nodes[3])
	ctx, cancel := context.WithTimeout(context.Background(), circWait)
	defer cancel()
	s, err := c.OpenStream(ctx, "slow")
	if err != nil {
		t.Fatal(err)
	}
	exit := <-accepted

	const total = 2 << 20 // 8x the stream window
	want := bytes.Repeat([]byte("0123456789abcdef"), total/16)
	var written atomic.Int64
	wdone := make(chan error, 1)
	go func() {
		for off := 0; off < total; off += proto.RelayDataSize {
			end := min(off+proto.RelayDataSize, total)
			if _, err := s.Write(want[off:end]); err != nil {
				wdone <- err
				return
			}
			written.Add(int64(end - off))
		}
		wdone <- s.Close()
	}()

	window := nodes[3].cfg.StreamWindow
	synctest.Wait() // everyone blocked: the sender on its window, the reader on release
	// The sender has used its whole stream window and no more: it is
	// blocked on the SENDME the reader has not earned yet.
	if w := written.Load(); w != int64(window*proto.RelayDataSize) {
		t.Fatalf("sender wrote %d bytes with a window of %d cells", w, window)
	}
	if n, _ := exit.queuedCells(); n != window {
		t.Fatalf("exit buffers %d cells, window %d", n, window)
	}
	close(release)
	if err := <-wdone; err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, want) {
			t.Fatalf("got %d bytes, differing", len(b))
		}
	case <-time.After(circWait):
		t.Fatal("reader did not finish")
	}
	if _, high := exit.queuedCells(); high > window {
		t.Fatalf("exit buffered %d cells, window %d", high, window)
	}
}

func TestStreamEOFAndClose(t *testing.T) {
	noLeaks(t)
	nodes := newNet(t, 2, nil)
	nodes[1].sw.Handle("hello", func(s *Stream) {
		s.Write([]byte("hello"))
		s.Close()
	})
	c := build(t, nodes[0], nodes[1])
	s, err := c.OpenStream(context.Background(), "hello")
	if err != nil {
		t.Fatal(err)
	}
	s.SetReadDeadline(time.Now().Add(circWait))
	b, err := io.ReadAll(s)
	if err != nil || string(b) != "hello" {
		t.Fatalf("read %q, %v", b, err)
	}
	if _, err := s.Write([]byte("x")); err == nil {
		t.Fatal("write after the peer ended succeeded")
	}
	s.Close()
	c.Close()
	if _, err := c.OpenStream(context.Background(), "hello"); err == nil {
		t.Fatal("stream on a closed circuit")
	}
}

func TestPeerIgnoringStreamWindowIsDestroyed(t *testing.T) {
	noLeaks(t)
	nodes := newNet(t, 3, nil)
	hold := make(chan struct{})
	nodes[2].sw.Handle("stall", func(s *Stream) { <-hold })
	defer close(hold)
	c := build(t, nodes[0], nodes[1], nodes[2])
	s, err := c.OpenStream(context.Background(), "stall")
	if err != nil {
		t.Fatal(err)
	}
	// Bypass our own window: DATA sent as if it were a control cell.
	window := nodes[2].cfg.StreamWindow
	for i := 0; i <= window; i++ {
		if err := c.ep.sendControl(lastHop, false, proto.RelayData, s.ID(), []byte("x")); err != nil {
			break // the circuit may already be gone
		}
	}
	waitClosed(t, c)
	if c.Reason() != proto.DestroyProtocol {
		t.Fatalf("closed with %v", c.Reason())
	}
}

func TestStreamCellsKeepCommandsAndBoundaries(t *testing.T) {
	noLeaks(t)
	nodes := newNet(t, 3, nil)
	nodes[2].sw.Handle("cellecho", func(s *Stream) {
		buf := make([]byte, proto.RelayDataSize)
		for {
			cmd, n, err := s.ReadCell(buf)
			if err != nil {
				return
			}
			if s.WriteCell(cmd, buf[:n]) != nil {
				return
			}
		}
	})
	c := build(t, nodes[0], nodes[1], nodes[2])
	s, err := c.OpenStream(context.Background(), "cellecho")
	if err != nil {
		t.Fatal(err)
	}
	s.SetReadDeadline(time.Now().Add(circWait))
	if err := s.WriteCell(proto.RelaySendme, nil); err == nil {
		t.Fatal("WriteCell accepted a control command")
	}
	cmds := []proto.RelayCommand{proto.RelayDBQuery, proto.RelayDBData, proto.RelayData, proto.RelayDBEnd}
	buf := make([]byte, proto.RelayDataSize)
	for round := range 1200 { // past the stream window: SENDMEs flow from ReadCell
		cmd := cmds[round%len(cmds)]
		msg := bytes.Repeat([]byte{byte(round)}, 1+round%proto.RelayDataSize)
		if err := s.WriteCell(cmd, msg); err != nil {
			t.Fatal(err)
		}
		gc, n, err := s.ReadCell(buf)
		if err != nil || gc != cmd || !bytes.Equal(buf[:n], msg) {
			t.Fatalf("round %d: got %v %d bytes (%v), want %v %d bytes", round, gc, n, err, cmd, len(msg))
		}
	}
	s.Close()
}

func TestLastHopOpensStreamBackToOrigin(t *testing.T) {
	noLeaks(t)
	nodes := newNet(t, 4, nil)
	// The origin serves "back"; the last hop's "ordb" answers each request
	// by asking the origin over the same circuit, as an ORDB forwards a
	// query to a peer through that peer's circuit.
	nodes[0].sw.Handle("back", func(s *Stream) {
		b := make([]byte, 64)
		n, _ := s.Read(b)
		s.Write(append([]byte("answer to "), b[:n]...))
	})
	nodes[3].sw.Handle("ordb", func(s *Stream) {
		b := make([]byte, 64)
		n, err := s.Read(b)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), circWait)
		defer cancel()
		back, err := s.OpenStream(ctx, "back")
		if err != nil {
			s.Write([]byte("open failed: " + err.Error()))
			return
		}
		defer back.Close()
		if back.ID() < lastHopStreams {
			s.Write([]byte("wrong stream ID half"))
			return
		}
		back.Write(b[:n])
		back.SetReadDeadline(time.Now().Add(circWait))
		r, _ := io.ReadAll(back)
		s.Write(r)
	})
	c := build(t, nodes[0], nodes[1], nodes[2], nodes[3])
	s, err := c.OpenStream(context.Background(), "ordb")
	if err != nil {
		t.Fatal(err)
	}
	s.SetReadDeadline(time.Now().Add(circWait))
	s.Write([]byte("q1"))
	b := make([]byte, 64)
	n, err := s.Read(b)
	if err != nil || string(b[:n]) != "answer to q1" {
		t.Fatalf("got %q, %v", b[:n], err)
	}
	s.Close()
}

func TestExitOpensTCPUnderPolicy(t *testing.T) {
	noLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Add(1)
	go func() { // a TCP echo server
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	target := ln.Addr().String()
	nodes := newNet(t, 4, func(i int, cfg *SwitchConfig) {
		if i == 3 {
			cfg.Flags |= proto.FlagExit
			cfg.ExitPolicy = func(ap netip.AddrPort) bool { return ap.String() == target }
		}
		if i == 2 {
			cfg.ExitPolicy = func(netip.AddrPort) bool { return true } // but no FlagExit
		}
	})
	c := build(t, nodes[0], nodes[1], nodes[2], nodes[3])
	s, err := c.OpenStream(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	s.SetReadDeadline(time.Now().Add(circWait))
	want := bytes.Repeat([]byte("exit "), 20000)
	go s.Write(want)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("echo through the exit: %v", err)
	}
	s.Close()

	// Refused by policy, and by a node that is not an exit.
	other := "127.0.0.1:1"
	if _, err := c.OpenStream(context.Background(), other); !errors.Is(err, ErrStreamRefused) {
		t.Fatalf("policy: %v", err)
	}
	c2 := build(t, nodes[0], nodes[1], nodes[2])
	if _, err := c2.OpenStream(context.Background(), target); !errors.Is(err, ErrStreamRefused) {
		t.Fatalf("non-exit: %v", err)
	}
}

func TestORDBOnlyNodeDoesNotRelay(t *testing.T) {
	noLeaks(t)
	nodes := newNet(t, 3, func(i int, cfg *SwitchConfig) {
		if i == 1 {
			cfg.Flags = proto.FlagORDB
		}
	})
	// It ends circuits...
	if err := echoCheck(build(t, nodes[0], nodes[1]), 100, 1); err != nil {
		t.Fatal(err)
	}
	// ...but does not extend them.
	ctx, cancel := context.WithTimeout(context.Background(), circWait)
	defer cancel()
	_, err := nodes[0].sw.Build(ctx, descs(nodes[1], nodes[2]))
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("extend through an ORDB-only node: %v", err)
	}
}

// A Stream's deadlines are net.Conn's, judged in fake time: Read fails
// exactly when its deadline passes, and Write once the window is used up
// past it.
func TestStreamDeadlines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nodes := newMemNodes(t, 2)
		hold := make(chan struct{})
		nodes[1].sw.Handle("stall", func(s *Stream) { <-hold })
		defer close(hold)
		c := build(t, nodes[0], nodes[1])
		s, err := c.OpenStream(context.Background(), "stall")
		if err != nil {
			t.Fatal(err)
		}
		var conn net.Conn = s // a Stream is a net.Conn
		if conn.RemoteAddr().Network() != "veil" {
			t.Fatal("address network")
		}
		const wait = 50 * time.Millisecond
		t0 := time.Now()
		conn.SetDeadline(t0.Add(wait))
		if _, err := conn.Read(make([]byte, 10)); !isTimeout(err) {
			t.Fatalf("read past the deadline: %v", err)
		}
		if took := time.Since(t0); took != wait {
			t.Fatalf("read gave up after %v, deadline %v", took, wait)
		}
		// The service never reads: the window closes and Write times out.
		big := make([]byte, 2*nodes[1].cfg.StreamWindow*proto.RelayDataSize)
		n, err := conn.Write(big)
		if !isTimeout(err) || n != nodes[1].cfg.StreamWindow*proto.RelayDataSize {
			t.Fatalf("write past the window: %d bytes, %v", n, err)
		}
		// A writer blocked on the closed window wakes at its deadline.
		t1 := time.Now()
		conn.SetWriteDeadline(t1.Add(time.Second))
		if n, err := conn.Write(big[:1]); !isTimeout(err) || n != 0 {
			t.Fatalf("write on a closed window: %d bytes, %v", n, err)
		}
		if took := time.Since(t1); took != time.Second {
			t.Fatalf("blocked write gave up after %v, deadline 1s", took)
		}
		conn.SetDeadline(time.Time{})
		s.Close()
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() && errors.Is(err, context.DeadlineExceeded)
}
