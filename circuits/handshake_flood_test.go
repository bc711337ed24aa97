package circuits

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"veil/circuits/link"
	"veil/proto"
)

// newNodeOn starts a node like newNet's, with link settings lcfg, listening
// on listen (an address in 127.0.0.0/8).
func newNodeOn(t testing.TB, listen string, lcfg link.Config, tweak func(*SwitchConfig)) *cnode {
	t.Helper()
	id, err := NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	cn := &cnode{id: id, links: link.NewLinks(id.Key, lcfg)}
	cfg := DefaultSwitchConfig()
	cfg.Flags = proto.FlagRelay | proto.FlagORDB
	cfg.AllowPrivateExtend = true
	if tweak != nil {
		tweak(&cfg)
	}
	cn.cfg = cfg
	if cn.sw, err = NewSwitch(id, cn.links, cfg); err != nil {
		t.Fatal(err)
	}
	cn.links.SetHandlers(link.Handlers{Cell: cn.sw.HandleCell, Closed: cn.sw.HandleClosed})
	a, err := cn.links.Listen(listen)
	if err != nil {
		t.Fatal(err)
	}
	if cn.desc, err = id.Descriptor([]netip.AddrPort{netip.MustParseAddrPort(a.String())}, cfg.Flags, time.Hour); err != nil {
		t.Fatal(err)
	}
	cn.sw.Handle("echo", echoService)
	t.Cleanup(func() {
		cn.sw.Close()
		cn.links.Close()
	})
	return cn
}

// A thousand stalled TLS handshakes and a CREATE2 flood, all from one /24
// (127.0.5.0/24: on Linux all of 127.0.0.0/8 is loopback, and the test
// binds its source addresses there to stand for distinct networks): a
// client from another /24 still builds a circuit through the node, and
// the node answers only as many CREATE2s as its bucket allows.
//
// The node is a small router's (MaxLinks 512): without the per-/24 bound
// the stalled handshakes take every slot and the client is refused;
// without the bucket the node runs an X25519 handshake per CREATE2.
func TestHandshakeFlood(t *testing.T) {
	noLeaks(t)
	lcfg := link.DefaultConfig()
	lcfg.MaxLinks = 512
	victim := newNodeOn(t, "127.0.0.1:0", lcfg, nil)
	server := newNodeOn(t, "127.0.0.3:0", link.DefaultConfig(), nil)

	// The attacker's link, from 127.0.5.1: CREATE2 + DESTROY pairs, all
	// carrying one handshake (it costs the attacker nothing to repeat).
	acfg := link.DefaultConfig()
	acfg.SourceAddr = netip.MustParseAddr("127.0.5.1")
	aid, err := NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	alinks := link.NewLinks(aid.Key, acfg)
	defer alinks.Close()
	var created, refused atomic.Int64
	alinks.SetHandlers(link.Handlers{Cell: func(_ link.Conn, c *proto.Cell) {
		switch c.Command() {
		case proto.CmdCreated2:
			created.Add(1)
		case proto.CmdDestroy:
			if r, _ := proto.ParseDestroy(c.Payload()); r == proto.DestroyResourceLimit {
				refused.Add(1)
			}
		}
		proto.PutCell(c)
	}})
	ctx, cancel := context.WithTimeout(context.Background(), circWait)
	defer cancel()
	al, err := alinks.Get(ctx, victim.id.ID, victim.desc.Addrs[0].String())
	if err != nil {
		t.Fatal(err)
	}
	_, tmpl := create2To(t, 1<<31|1, victim.id)
	const creates = 2000
	start := time.Now()
	floodDone := make(chan struct{})
	go func() {
		defer close(floodDone)
		for i := range uint32(creates) {
			c := proto.GetCell()
			*c = *tmpl
			c.SetCircID(1<<31 | (i + 1))
			if al.SendCell(c) != nil {
				return
			}
			if al.SendCell(newCell(1<<31|(i+1), proto.CmdDestroy)) != nil {
				return
			}
		}
	}()
	defer proto.PutCell(tmpl)

	// A thousand connections from 127.0.5.0/24 that never say a word.
	var stalled []net.Conn
	defer func() {
		for _, c := range stalled {
			c.Close()
		}
	}()
	for i := range 1000 {
		src := net.IPv4(127, 0, 5, byte(2+i%250))
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: circWait}
		c, err := d.Dial("tcp", victim.desc.Addrs[0].String())
		if err != nil {
			t.Fatalf("stalled connection %d: %v", i, err)
		}
		stalled = append(stalled, c)
	}

	// A client from 127.0.9.0/24 builds a circuit through the node.
	hcfg := link.DefaultConfig()
	hcfg.SourceAddr = netip.MustParseAddr("127.0.9.1")
	honest := newNodeOn(t, "127.0.9.1:0", hcfg, nil)
	bctx, bcancel := context.WithTimeout(context.Background(), circWait)
	defer bcancel()
	t0 := time.Now()
	c, err := honest.sw.Build(bctx, descs(victim, server))
	if err != nil {
		t.Fatalf("a client from another /24 under the flood: %v", err)
	}
	t.Logf("the client built its circuit in %v", time.Since(t0))
	defer c.Close()
	if err := echoCheck(c, 10000, 3); err != nil {
		t.Fatal(err)
	}

	<-floodDone
	// Wait until the answers stop coming (some DESTROYs may be dropped on
	// a full queue: they are sent without blocking).
	for deadline, last, same := time.Now().Add(circWait), int64(-1), 0; same < 4 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		if n := created.Load() + refused.Load(); n == last {
			same++
		} else {
			last, same = n, 0
		}
	}
	elapsed := time.Since(start)
	allowed := int64(victim.cfg.CreateBurst) + int64(victim.cfg.CreateRate*elapsed.Seconds()) + 1
	t.Logf("%d CREATED2 and %d refused of %d CREATE2 in %v (bucket allows %d)", created.Load(), refused.Load(), creates, elapsed, allowed)
	if created.Load() > allowed {
		t.Fatalf("%d CREATE2 answered with a handshake, the bucket allows %d", created.Load(), allowed)
	}
	if refused.Load() == 0 {
		t.Fatal("no CREATE2 refused")
	}
}

// A relayed circuit stuck behind a full next link (the next hop reads
// nothing) holds the cells of its batch; once the out-of-memory handler
// condemns it, it gives up the wait and is gone at once, not after the
// link's write timeout (a minute).
func TestOOMFreesCircuitStuckOnFullLink(t *testing.T) {
	noLeaks(t)
	origin := newNodeOn(t, "127.0.0.1:0", link.DefaultConfig(), nil)
	victim := newNodeOn(t, "127.0.0.1:0", link.DefaultConfig(), func(c *SwitchConfig) {
		c.MaxQueuedBytes = 64 * QueuedCellCost // the test sets it as it goes
	})
	next := newNodeOn(t, "127.0.0.1:0", link.DefaultConfig(), nil)
	// next stops reading once told: its link from the victim fills up.
	var stall atomic.Bool
	release := make(chan struct{})
	next.links.SetHandlers(link.Handlers{
		Cell: func(l link.Conn, c *proto.Cell) {
			if stall.Load() {
				<-release
			}
			next.sw.HandleCell(l, c)
		},
		Closed: next.sw.HandleClosed,
	})
	defer close(release)
	c := build(t, origin, victim, next)
	defer c.Close()
	stall.Store(true)
	// DROPs to the last hop: no window holds them back. They fill the
	// socket buffers and the victim's link to next (256 KiB); then the
	// circuit's goroutine at the victim waits on that link, holding its
	// batch, and more cells queue behind it.
	setBudget := func(cells int) {
		b := &victim.sw.budget
		b.mu.Lock()
		b.maxCells = cells
		b.mu.Unlock()
	}
	setBudget(1 << 30) // no kill while the queue fills
	toNext := victim.links.Lookup(next.id.ID)
	if toNext == nil {
		t.Fatal("the victim has no link to next")
	}
	full := func() bool { return toNext.QueuedBytes() > link.DefaultConfig().SendQueueBytes-2*proto.CellSize }
	drops := 0
	for deadline := time.Now().Add(circWait); !full(); {
		for range 100 {
			if c.ep.sendControl(1, false, proto.RelayDrop, 0, nil) != nil {
				t.Fatal("the circuit ended while filling")
			}
			drops++
		}
		if time.Now().After(deadline) || drops > 40000 {
			t.Fatalf("the victim's link to next never filled (%d DROPs sent)", drops)
		}
		time.Sleep(time.Millisecond)
	}
	for range 500 { // behind the stuck goroutine
		c.ep.sendControl(1, false, proto.RelayDrop, 0, nil)
	}
	for deadline := time.Now().Add(circWait); ; {
		victim.sw.checkQueues(time.Now())
		if q, _ := victim.sw.QueuedCells(); q >= 400 {
			break
		}
		if time.Now().After(deadline) {
			q, _ := victim.sw.QueuedCells()
			t.Fatalf("the victim holds only %d cells behind the full link", q)
		}
		time.Sleep(5 * time.Millisecond)
	}
	setBudget(64)
	victim.sw.checkQueues(time.Now()) // over budget: condemned
	select {
	case <-c.Done():
		if r := c.Reason(); r != proto.DestroyResourceLimit {
			t.Fatalf("closed with %v, want RESOURCELIMIT", r)
		}
	case <-time.After(circWait):
		q, kills := victim.sw.QueuedCells()
		t.Fatalf("the circuit still lives (%d cells held at the victim's last look, %d kills): a condemned circuit waits on the full link", q, kills)
	}
	if _, kills := victim.sw.QueuedCells(); kills == 0 {
		t.Fatal("the handler destroyed nothing")
	}
	for deadline := time.Now().Add(circWait); victim.sw.Joined() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("the victim still carries %d circuits", victim.sw.Joined())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
