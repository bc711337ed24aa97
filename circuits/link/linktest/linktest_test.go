package linktest

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"testing/synctest"

	"veil/circuits/link"
	"veil/proto"
)

type closed struct {
	l   link.Conn
	err error
}

// recorder is a node's handlers writing what arrives to channels.
type recorder struct {
	cells  chan *proto.Cell
	vars   chan proto.VarCell
	closed chan closed
	from   chan link.Conn // the Conn each fixed cell arrived on
}

func newRecorder(nd *Node) *recorder {
	r := &recorder{
		cells:  make(chan *proto.Cell, 2*QueueCells),
		vars:   make(chan proto.VarCell, 16),
		closed: make(chan closed, 4),
		from:   make(chan link.Conn, 2*QueueCells),
	}
	nd.SetHandlers(link.Handlers{
		Cell: func(l link.Conn, c *proto.Cell) { r.from <- l; r.cells <- c },
		Var:  func(l link.Conn, v proto.VarCell) { r.vars <- v },
		Closed: func(l link.Conn, err error) {
			r.closed <- closed{l, err}
		},
	})
	return r
}

func cell(circ uint32, cmd proto.Command) *proto.Cell {
	c := proto.GetCell()
	c.SetCircID(circ)
	c.SetCommand(cmd)
	return c
}

func ids() (a, b proto.NodeID) {
	a[0], b[0] = 1, 2
	return a, b
}

func TestConnCarriesCellsInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := NewNet()
		defer n.Close()
		ia, ib := ids()
		a, b := n.Node(ia), n.Node(ib)
		ra, rb := newRecorder(a), newRecorder(b)
		l, err := a.Dial(context.Background(), ib, "ignored")
		if err != nil {
			t.Fatal(err)
		}
		if l.Peer() != ib || l.Inbound() {
			t.Fatalf("dialer's end: peer %v inbound %v", l.Peer(), l.Inbound())
		}
		if again, _ := a.Dial(context.Background(), ib, ""); again != l {
			t.Fatal("a second Dial made a second link")
		}
		for i := range uint32(100) {
			cmd := proto.CmdRelay
			if i%10 == 0 {
				cmd = proto.CmdPadding
			}
			if err := l.SendCell(cell(i, cmd)); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.(*Conn).SendVar(proto.VarCell{CircID: 7, Command: proto.CmdDHT, Payload: []byte("hi")}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		// PADDING is dropped; the rest arrives in order, on b's end.
		for i := range uint32(100) {
			if i%10 == 0 {
				continue
			}
			c, on := <-rb.cells, <-rb.from
			if c.CircID() != i {
				t.Fatalf("got circ %d, want %d", c.CircID(), i)
			}
			if on.Peer() != ia || !on.Inbound() {
				t.Fatal("cell did not arrive on the receiver's inbound end")
			}
			proto.PutCell(c)
		}
		if len(rb.cells) != 0 || len(ra.cells) != 0 {
			t.Fatal("extra cells")
		}
		if v := <-rb.vars; v.CircID != 7 || !bytes.Equal(v.Payload, []byte("hi")) {
			t.Fatalf("var cell %+v", v)
		}
		// Answers go back on the end the cell arrived on.
		back, _ := b.Dial(context.Background(), ia, "")
		if err := back.SendCell(cell(5, proto.CmdDestroy)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if c := <-ra.cells; c.CircID() != 5 || c.Command() != proto.CmdDestroy {
			t.Fatalf("answer: circ %d %v", c.CircID(), c.Command())
		}
	})
}

func TestConnQueueBoundAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := NewNet()
		ia, ib := ids()
		a, b := n.Node(ia), n.Node(ib)
		ra := newRecorder(a)
		release := make(chan struct{})
		var got []uint32
		b.SetHandlers(link.Handlers{
			Cell: func(l link.Conn, c *proto.Cell) {
				got = append(got, c.CircID())
				proto.PutCell(c)
				<-release // a stalled receiver
			},
			Closed: func(l link.Conn, err error) {
				if !errors.Is(err, link.ErrClosedByPeer) || l.Peer() != ia {
					t.Errorf("receiver's Closed(%v, %v)", l.Peer(), err)
				}
			},
		})
		l, err := a.Dial(context.Background(), ib, "")
		if err != nil {
			t.Fatal(err)
		}
		// One cell is in the stalled handler, QueueCells more fill the queue.
		for i := range uint32(QueueCells + 1) {
			if err := l.SendCell(cell(i, proto.CmdRelay)); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
		}
		if err := l.TrySendCell(cell(1, proto.CmdRelay)); !errors.Is(err, link.ErrQueueFull) {
			t.Fatalf("TrySendCell on a full queue: %v", err)
		}
		blocked := make(chan error)
		go func() { blocked <- l.SendCell(cell(2, proto.CmdRelay)) }()
		synctest.Wait()
		select {
		case err := <-blocked:
			t.Fatalf("SendCell on a full queue returned %v", err)
		default:
		}
		// The dialer closes, from its end: the blocked sender fails, the
		// queued cells are dropped, each side hears of it once.
		if err := l.(*Conn).Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-blocked; !errors.Is(err, link.ErrClosed) {
			t.Fatalf("blocked SendCell after Close: %v", err)
		}
		close(release)
		synctest.Wait()
		if len(got) != 1 {
			t.Fatalf("stalled receiver handled %d cells", len(got))
		}
		if ev := <-ra.closed; ev.l != l || !errors.Is(ev.err, link.ErrClosed) {
			t.Fatalf("closing end's Closed(%v)", ev.err)
		}
		if err := l.SendCell(cell(3, proto.CmdRelay)); !errors.Is(err, link.ErrClosed) {
			t.Fatalf("SendCell after Close: %v", err)
		}
		// A new Dial makes a new link.
		l2, err := a.Dial(context.Background(), ib, "")
		if err != nil || l2 == l {
			t.Fatalf("Dial after Close: %v (same link %v)", err, l2 == l)
		}
		n.Close()
		if _, err := a.Dial(context.Background(), ib, ""); !errors.Is(err, ErrNetClosed) {
			t.Fatalf("Dial after Net.Close: %v", err)
		}
		var unknown proto.NodeID
		unknown[0] = 9
		if _, err := NewNet().Node(ia).Dial(context.Background(), unknown, ""); !errors.Is(err, ErrNoNode) {
			t.Fatalf("Dial to an unknown node: %v", err)
		}
	})
}
