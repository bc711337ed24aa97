package link

import (
	"sync"
	"testing"
	"time"

	"veil/proto"
)

// A cell sent on a link whose writer has been idle for inlineQuiet is
// written by its sender; the cells that follow go through the queue.
// Senders on both ends, in bursts separated by quiet gaps so that both
// paths take turns and race each other: every cell arrives, once, in
// each sender's order.
func TestLinkInlineWritesKeepOrder(t *testing.T) {
	leakCheck(t)
	const senders, bursts = 4, 60
	newChecker := func() *orderChecker {
		return &orderChecker{next: map[uint32]uint32{}, all: make(chan struct{}), want: senders * bursts * 3}
	}
	checkA, checkB := newChecker(), newChecker()
	arrivedOn := make(chan Conn, 1)
	handlers := func(o *orderChecker) *Handlers {
		return &Handlers{Cell: func(l Conn, c *proto.Cell) {
			select {
			case arrivedOn <- l:
			default:
			}
			o.see(c.Payload(), c.CircID())
			proto.PutCell(c)
		}}
	}
	a := newTestNode(t, testConfig(), handlers(checkA))
	b := newTestNode(t, testConfig(), handlers(checkB))
	lb := b.get(t, a)

	var wg sync.WaitGroup
	send := func(l *Link, sender uint32) {
		defer wg.Done()
		seq := uint32(0)
		for i := range bursts {
			for range 1 + (i+int(sender))%3 {
				c := proto.GetCell()
				c.SetCircID(sender)
				c.SetCommand(proto.CmdRelay)
				encodeSeq(c.Payload(), sender, seq)
				seq++
				if err := l.SendCell(c); err != nil {
					t.Error(err)
					return
				}
			}
			// A quiet gap: the link's writer goes idle long enough
			// for the next burst's first cell to be written inline,
			// unless another sender's cells keep it busy.
			time.Sleep(2 * inlineQuiet)
		}
		// Top up to the same count for every sender (bursts of 1-3).
		for ; seq < bursts*3; seq++ {
			c := proto.GetCell()
			c.SetCircID(sender)
			c.SetCommand(proto.CmdRelay)
			encodeSeq(c.Payload(), sender, seq)
			if err := l.SendCell(c); err != nil {
				t.Error(err)
				return
			}
		}
	}
	for s := range uint32(senders) {
		wg.Add(1)
		go send(lb, s)
	}
	la := recv(t, arrivedOn).(*Link)
	for s := range uint32(senders) {
		wg.Add(1)
		go send(la, s)
	}
	wg.Wait()
	for _, o := range []*orderChecker{checkA, checkB} {
		select {
		case <-o.all:
		case <-time.After(waitFor):
			t.Fatalf("received %d of %d", o.n, o.want)
		}
		o.mu.Lock()
		if o.bad != nil {
			t.Error(o.bad)
		}
		o.mu.Unlock()
	}
	for _, l := range []*Link{la, lb} {
		if n := l.inlined.Load(); n == 0 {
			t.Errorf("no cell was written inline on the %v end", map[bool]string{true: "listener's", false: "dialer's"}[l.Inbound()])
		} else {
			t.Logf("%d of %d cells written inline", n, senders*bursts*3)
		}
	}
}

// A bulk sender's cells go through the writer, gathered: only a cell
// after a quiet gap is written inline.
func TestLinkBulkNotInline(t *testing.T) {
	leakCheck(t)
	const cells = 5000
	a := newTestNode(t, testConfig(), nil)
	b := newTestNode(t, testConfig(), &Handlers{Cell: func(l Conn, c *proto.Cell) { proto.PutCell(c) }})
	l := a.get(t, b)
	for i := range cells {
		if err := l.SendCell(makeCell(1, proto.CmdRelay, byte(i))); err != nil {
			t.Fatal(err)
		}
	}
	// The first cell may go inline; a few more if the writer caught up
	// and the sender was descheduled for inlineQuiet; not most.
	if n := l.inlined.Load(); n > cells/50 {
		t.Fatalf("%d of %d bulk cells written inline, each a system call", n, cells)
	}
}
