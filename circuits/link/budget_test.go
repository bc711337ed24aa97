package link

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

// A Get naming an ID at an address reuses a link to that ID only if the
// link's remote IP is the named one; otherwise it dials the named address.
func TestGetReusesLinkOnlyAtNamedIP(t *testing.T) {
	leakCheck(t)
	a := newTestNode(t, testConfig(), nil) // on 127.0.0.1
	bcfg := testConfig()
	bcfg.SourceAddr = netip.MustParseAddr("127.0.0.1")
	b := newTestNode(t, bcfg, nil)
	bAddr2, err := b.m.Listen("127.0.0.2:0") // b also listens on 127.0.0.2
	if err != nil {
		t.Fatal(err)
	}
	in := b.get(t, a) // b dials a from 127.0.0.1
	_ = in
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	// Wait for a to register the inbound link.
	deadline := time.Now().Add(waitFor)
	for a.m.Lookup(b.id.ID) == nil {
		if time.Now().After(deadline) {
			t.Fatal("a never registered b's link")
		}
		time.Sleep(5 * time.Millisecond)
	}
	inbound := a.m.Lookup(b.id.ID)

	// Same IP, any port: the inbound link is reused, nothing is dialed
	// (port 9 has no listener).
	l, err := a.m.Get(ctx, b.id.ID, "127.0.0.1:9")
	if err != nil || l != inbound {
		t.Fatalf("Get at the link's IP: %v, %v; want the inbound link", l, err)
	}
	// Another IP: a new link to that address.
	l, err = a.m.Get(ctx, b.id.ID, bAddr2.String())
	if err != nil {
		t.Fatal(err)
	}
	if l == inbound {
		t.Fatal("Get at another IP reused the inbound link")
	}
	if got := l.RemoteAddr().(*net.TCPAddr).IP.String(); got != "127.0.0.2" {
		t.Fatalf("new link goes to %s, want 127.0.0.2", got)
	}
	if a.m.Len() != 2 {
		t.Fatalf("a has %d links, want 2", a.m.Len())
	}
	// Without an address, any open link does.
	if l, err := a.m.Get(ctx, b.id.ID, ""); err != nil || l == nil {
		t.Fatalf("Get without an address: %v", err)
	}
}

// Inbound connections are bounded per /24 and in handshakes at once; a
// peer from another /24 still gets a link while one /24 stalls its slots.
func TestInboundSubnetAndHandshakeBounds(t *testing.T) {
	leakCheck(t)
	cfg := testConfig()
	cfg.MaxInboundPerSubnet = 3
	cfg.MaxHandshakes = 5
	a := newTestNode(t, cfg, nil)
	stall := func(src string, n int) []net.Conn {
		var conns []net.Conn
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		for range n {
			c, err := d.Dial("tcp", a.addr)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		return conns
	}
	pending := func() (in int, bySubnet map[netip.Prefix]int) {
		a.m.mu.Lock()
		defer a.m.mu.Unlock()
		bySubnet = map[netip.Prefix]int{}
		for p, n := range a.m.perSubnet {
			bySubnet[p] = n
		}
		return a.m.pendingIn, bySubnet
	}
	waitPending := func(want int) {
		t.Helper()
		deadline := time.Now().Add(waitFor)
		for {
			if in, _ := pending(); in == want {
				return
			}
			if time.Now().After(deadline) {
				in, by := pending()
				t.Fatalf("%d handshakes pending (%v), want %d", in, by, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for _, c := range stall("127.0.5.1", 20) {
		defer c.Close()
	}
	waitPending(3) // the /24's bound
	_, by := pending()
	if by[netip.MustParsePrefix("127.0.5.0/24")] != 3 {
		t.Fatalf("per-subnet counts %v", by)
	}
	six := stall("127.0.6.1", 20)
	waitPending(5) // the handshake bound: 3 + 2
	// With every handshake slot taken, nobody gets in; once the stalled
	// connections of one /24 go, a peer from a third /24 does.
	hcfg := testConfig()
	hcfg.SourceAddr = netip.MustParseAddr("127.0.7.1")
	h := newTestNode(t, hcfg, nil)
	for _, c := range six {
		c.Close()
	}
	waitPending(3)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := h.m.Get(ctx, a.id.ID, a.addr); err != nil {
		t.Fatalf("a peer from another /24: %v", err)
	}
	deadline := time.Now().Add(waitFor)
	for a.m.Lookup(h.id.ID) == nil {
		if time.Now().After(deadline) {
			t.Fatal("a never registered the link from 127.0.7.1")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
