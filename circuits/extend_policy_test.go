package circuits

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"veil/circuits/link"
	"veil/proto"
)

func TestGlobalAddr(t *testing.T) {
	for _, tt := range []struct {
		addr   string
		global bool
	}{
		{"10.1.2.3", false}, {"172.16.0.1", false}, {"172.31.255.255", false},
		{"192.168.1.1", false}, {"169.254.169.254", false}, {"127.0.0.1", false},
		{"127.5.6.7", false}, {"100.64.0.1", false}, {"100.127.255.1", false},
		{"0.0.0.0", false}, {"224.0.0.1", false}, {"255.255.255.255", false},
		{"::1", false}, {"::", false}, {"fc00::1", false}, {"fd12:3456::1", false},
		{"fe80::1", false}, {"ff02::1", false}, {"::ffff:10.0.0.1", false},
		{"::ffff:127.0.0.1", false}, {"::ffff:192.168.0.1", false},
		{"64:ff9b::a00:1", false}, {"2002:a00:1::1", false}, {"::10.0.0.1", false},
		{"8.8.8.8", true}, {"172.32.0.1", true}, {"100.128.0.1", true},
		{"1.1.1.1", true}, {"2a00:1450:4001::1", true}, {"::ffff:8.8.8.8", true},
		{"2002:808:808::1", true},
	} {
		if got := GlobalAddr(netip.MustParseAddr(tt.addr)); got != tt.global {
			t.Errorf("GlobalAddr(%s) = %v, want %v", tt.addr, got, tt.global)
		}
	}
	if GlobalAddr(netip.Addr{}) {
		t.Error("the zero Addr is global")
	}
}

// recordingDialer stands between a relay's switch and its links: it
// records every dial, and passes on only those to loopback, so that no
// packet leaves for another address even if the policy regressed.
type recordingDialer struct {
	d     link.Dialer
	mu    sync.Mutex
	calls []string
}

func (r *recordingDialer) Dial(ctx context.Context, id proto.NodeID, addr string) (link.Conn, error) {
	r.mu.Lock()
	r.calls = append(r.calls, addr)
	r.mu.Unlock()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Unmap().IsLoopback() {
		return nil, errors.New("test dialer: refusing to dial off the machine")
	}
	return r.d.Dial(ctx, id, addr)
}

func (r *recordingDialer) called() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

// An EXTEND2 naming a non-global address gets TRUNCATED at once, and the
// relay dials nothing: not through its dialer, and on loopback no
// connection reaches a real listener at the named address.
func TestExtendPrivateRefused(t *testing.T) {
	noLeaks(t)
	nodes := newNet(t, 2, func(i int, cfg *SwitchConfig) {
		if i == 1 {
			cfg.AllowPrivateExtend = false // the default policy
		}
	})
	origin, relay := nodes[0], nodes[1]
	rec := &recordingDialer{d: relay.links}
	relay.sw.links = rec // before any circuit reaches it

	// What a relay would find on loopback: a real listener that must see
	// no connection.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lport := uint16(ln.Addr().(*net.TCPAddr).Port)

	var c *Circuit
	targets := []string{
		"10.1.2.3:7700", "172.16.5.4:7700", "172.31.0.9:443", "192.168.1.1:80",
		"169.254.169.254:80", "100.64.0.1:7700", "[::1]:7700", "[fc00::1]:7700",
		"[fe80::1]:7700", "[::ffff:10.0.0.1]:7700", "[64:ff9b::a00:1]:7700",
		netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), lport).String(),
	}
	for i, target := range targets {
		if i%4 == 0 { // each EXTEND2 spends a RELAY_EARLY cell: 8 a circuit
			if c != nil {
				c.Close()
			}
			c = build(t, origin, relay)
			defer c.Close()
		}
		other, err := NewEphemeralIdentity()
		if err != nil {
			t.Fatal(err)
		}
		d, err := other.Descriptor([]netip.AddrPort{netip.MustParseAddrPort(target)}, proto.FlagRelay, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), circWait)
		err = c.Extend(ctx, d)
		cancel()
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("EXTEND2 to %s: %v, want TRUNCATED", target, err)
		}
		if c.Hops() != 1 || isClosed(c) {
			t.Fatalf("after the refused EXTEND2 to %s the circuit has %d hops (closed %v)", target, c.Hops(), isClosed(c))
		}
	}
	if calls := rec.called(); len(calls) != 0 {
		t.Fatalf("the relay dialed %v", calls)
	}
	// Anything the relay had dialed would be waiting in the backlog by now.
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(100 * time.Millisecond))
	if conn, err := ln.Accept(); err == nil {
		conn.Close()
		t.Fatal("the loopback listener saw a connection")
	}
	// The circuit still works: the refusal cost it nothing.
	if err := echoCheck(c, 1000, 1); err != nil {
		t.Fatal(err)
	}
}

// An EXTEND2 naming an honest node's ID at a blackhole address (one that
// accepts TCP and never answers TLS) must not hold up an honest EXTEND2
// naming the node's real address: the two dials are not shared.
func TestExtendBadAddressDoesNotBlockHonest(t *testing.T) {
	noLeaks(t)
	nodes := newNet(t, 4, nil)
	attacker, honest, relay, target := nodes[0], nodes[1], nodes[2], nodes[3]

	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	var held []net.Conn
	var heldMu sync.Mutex
	go func() {
		for {
			conn, err := hole.Accept()
			if err != nil {
				return
			}
			heldMu.Lock()
			held = append(held, conn) // say nothing
			heldMu.Unlock()
		}
	}()
	defer func() {
		heldMu.Lock()
		for _, c := range held {
			c.Close()
		}
		heldMu.Unlock()
	}()
	fake, err := target.id.Descriptor([]netip.AddrPort{netip.MustParseAddrPort(hole.Addr().String())}, target.desc.Flags, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	bad := build(t, attacker, relay)
	defer bad.Close()
	badDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), circWait)
		defer cancel()
		badDone <- bad.Extend(ctx, fake)
	}()
	// Wait until the relay's dial to the hole is under way.
	deadline := time.Now().Add(circWait)
	for {
		heldMu.Lock()
		n := len(held)
		heldMu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the relay never dialed the blackhole")
		}
		time.Sleep(5 * time.Millisecond)
	}

	good := build(t, honest, relay)
	defer good.Close()
	// Well under the relay's HandshakeTimeout (10 s), which a shared dial
	// would make the honest extend wait out and then fail.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := good.Extend(ctx, target.desc); err != nil {
		t.Fatalf("honest EXTEND2 while a bad one for the same ID is pending: %v", err)
	}
	if err := echoCheck(good, 1000, 2); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-badDone:
		if err == nil {
			t.Fatal("the EXTEND2 to the blackhole succeeded")
		}
	default: // still pending: the cleanup ends it
	}
}
