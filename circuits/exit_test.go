package circuits

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"veil/circuits/exitpolicy"
	"veil/proto"
)

// destination listens on 127.0.0.1 until t ends and writes body to every
// connection, then closes it. It returns the address.
func destination(t *testing.T, body []byte) string {
	addr, _ := localServer(t, func(c net.Conn) { c.Write(body) })
	return addr
}

// claimAllPorts re-signs the exits' descriptors with a port summary of
// every port, whatever their policies refuse.
func claimAllPorts(t *testing.T, exits []*cnode) {
	t.Helper()
	for _, n := range exits {
		d, err := n.id.ExitDescriptorAt(time.Now(), n.desc.Addrs, n.cfg.Flags, []proto.PortRange{{Lo: 1, Hi: 65535}}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		n.desc = d
	}
}

// exitDialer is an ExitDialer of nodes[0] over all of nodes (on one
// subnet here), closed when t ends.
func exitDialer(t *testing.T, nodes []*cnode, cfg ExitDialerConfig) *ExitDialer {
	t.Helper()
	cfg.AllowSameSubnet = true
	d, err := NewExitDialer(nodes[0].sw, StaticDirectory(descs(nodes...)), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// localServer listens on 127.0.0.1 until t ends or close is called and
// runs serve on every connection, which it then closes.
func localServer(t *testing.T, serve func(net.Conn)) (addr string, close func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var once sync.Once
	stop := func() { once.Do(func() { ln.Close(); wg.Wait() }) }
	t.Cleanup(stop)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			serve(c)
			c.Close()
		}
	}()
	return ln.Addr().String(), stop
}

// An exit resolves names itself, checks every address against its policy
// (refusing loopback unless allowed), and tells the origin why it refused.
func TestExitNamesAndReasons(t *testing.T) {
	noLeaks(t)
	_, portText, _ := net.SplitHostPort(destination(t, []byte("hello from the destination")))
	port, _ := strconv.Atoi(portText)
	closedPort := func() int { // a port nobody listens on
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}()
	var asked []string
	var mu sync.Mutex
	policy := func(allowPrivate bool) func(netip.AddrPort) bool {
		p, err := exitpolicy.Parse([]string{"accept 127.0.0.1:" + strconv.Itoa(port), "accept 127.0.0.1:" + strconv.Itoa(closedPort), "reject *:*"}, allowPrivate)
		if err != nil {
			t.Fatal(err)
		}
		return p.Allows
	}
	nodes := newNet(t, 5, func(i int, cfg *SwitchConfig) {
		if i >= 3 {
			cfg.Flags |= proto.FlagExit
			cfg.ExitPolicy = policy(i == 3) // node 4 keeps loopback refused
			cfg.ExitResolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
				mu.Lock()
				asked = append(asked, host)
				mu.Unlock()
				if host == "localhost" {
					return []netip.Addr{netip.MustParseAddr("::1"), netip.MustParseAddr("127.0.0.1")}, nil
				}
				return nil, errors.New("no such host (test resolver)")
			}
		}
	})
	c := build(t, nodes[0], nodes[1], nodes[2], nodes[3])
	for _, dest := range []string{"localhost:" + strconv.Itoa(port), "127.0.0.1:" + strconv.Itoa(port), "[::ffff:127.0.0.1]:" + strconv.Itoa(port)} {
		s, err := c.OpenStream(context.Background(), dest)
		if err != nil {
			t.Fatalf("%s: %v", dest, err)
		}
		s.SetReadDeadline(time.Now().Add(circWait))
		got, err := io.ReadAll(s)
		if err != nil || string(got) != "hello from the destination" {
			t.Fatalf("%s: read %q %v", dest, got, err)
		}
		s.Close()
	}
	reason := func(c *Circuit, dest string) uint8 {
		t.Helper()
		_, err := c.OpenStream(context.Background(), dest)
		var re *RefusedError
		if !errors.As(err, &re) {
			t.Fatalf("%s: %v, want a refusal", dest, err)
		}
		return re.Reason
	}
	for dest, want := range map[string]uint8{
		"127.0.0.1:1":                           EndExitPolicy,
		"[::1]:" + strconv.Itoa(port):           EndExitPolicy, // localhost's other address: not in the policy
		"nowhere.invalid:80":                    EndResolveFailed,
		"abc.veil:80":                           EndResolveFailed,
		"127.0.0.1:" + strconv.Itoa(closedPort): EndConnectRefused,
		"bad host:80":                           EndNoService, // not HOST:PORT at all
	} {
		if got := reason(c, dest); got != want {
			t.Errorf("%s: END reason %d, want %d", dest, got, want)
		}
	}
	mu.Lock()
	for _, h := range asked {
		if h != "localhost" && h != "nowhere.invalid" {
			t.Errorf("the exit resolved %q", h)
		}
	}
	mu.Unlock()
	// Without allow_private, loopback is refused even though a rule
	// accepts it, by literal, mapped literal and by name.
	c2 := build(t, nodes[0], nodes[1], nodes[2], nodes[4])
	for _, dest := range []string{"127.0.0.1:" + strconv.Itoa(port), "[::ffff:127.0.0.1]:" + strconv.Itoa(port), "localhost:" + strconv.Itoa(port)} {
		if got := reason(c2, dest); got != EndExitPolicy {
			t.Errorf("%s without allow_private: END reason %d, want %d", dest, got, EndExitPolicy)
		}
	}
}

func TestSplitExitDest(t *testing.T) {
	for dest, ok := range map[string]bool{
		"example.com:80": true, "127.0.0.1:1": true, "[::1]:65535": true, "a_b.c-d:443": true,
		"example.com": false, "example.com:0": false, "example.com:65536": false, ":80": false,
		"exa mple.com:80": false, "[fe80::1%eth0]:80": false, "a..b:80": false, "x:080": false,
	} {
		if _, _, got := SplitExitDest(dest); got != ok {
			t.Errorf("SplitExitDest(%q) ok = %v, want %v", dest, got, ok)
		}
	}
}

// The exit dialer keeps isolation keys on separate circuits, reuses a
// key's circuit, and moves on to another exit when one refuses by policy.
func TestExitDialerIsolationAndPolicy(t *testing.T) {
	noLeaks(t)
	target := destination(t, []byte("ok"))
	// Nodes 3 and 4 are exits; only 4 accepts the target.
	nodes := newNet(t, 5, func(i int, cfg *SwitchConfig) {
		if i >= 3 {
			cfg.Flags |= proto.FlagExit
			rule := "reject *:*"
			if i == 4 {
				rule = "accept " + target
			}
			p, err := exitpolicy.Parse([]string{rule}, true)
			if err != nil {
				t.Fatal(err)
			}
			cfg.ExitPolicy = p.Allows
		}
	})
	// Both exits' summaries claim every port: node 3's policy refuses
	// the target anyway, which the dialer learns by trying.
	claimAllPorts(t, nodes[3:])
	cfg := DefaultExitDialerConfig()
	cfg.Attempts = 4
	d := exitDialer(t, nodes, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), circWait)
	defer cancel()
	read := func(key string) uint64 {
		t.Helper()
		s, err := d.Dial(ctx, key, target)
		if err != nil {
			t.Fatalf("dial as %q: %v", key, err)
		}
		defer s.Close()
		s.SetReadDeadline(time.Now().Add(circWait))
		if b, err := io.ReadAll(s); err != nil || string(b) != "ok" {
			t.Fatalf("read %q %v", b, err)
		}
		return s.LocalAddr().(StreamAddr).Circuit
	}
	a1, b1, a2 := read("alice"), read("bob"), read("alice")
	if a1 == b1 {
		t.Fatal("two isolation keys shared a circuit")
	}
	if a1 != a2 {
		t.Fatal("one isolation key did not reuse its circuit")
	}
	// Every exit refuses 127.0.0.1:1: the dialer says so by END reason.
	_, err := d.Dial(ctx, "alice", "127.0.0.1:1")
	var re *RefusedError
	if !errors.As(err, &re) || re.Reason != EndExitPolicy {
		t.Fatalf("dial to a destination every exit refuses: %v", err)
	}
	// After NEWNYM, a key gets a fresh circuit.
	d.NewIdentity()
	if a3 := read("alice"); a3 == a1 {
		t.Fatal("NewIdentity kept the key's circuit")
	}
	// With summaries that tell them apart, the dialer goes straight to
	// the exit that allows the port: nothing is refused on the way.
	p, _ := netip.ParseAddrPort(target)
	port := p.Port()
	for i, n := range nodes[3:] {
		ports := []proto.PortRange{{Lo: 1, Hi: 1}}
		if i == 1 {
			ports = []proto.PortRange{{Lo: port, Hi: port}}
		}
		if n.desc, err = n.id.ExitDescriptorAt(time.Now(), n.desc.Addrs, n.cfg.Flags, ports, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	d3 := exitDialer(t, nodes, cfg)
	for i := range 4 {
		s, err := d3.Dial(ctx, strconv.Itoa(i), target)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	d3.mu.Lock()
	if len(d3.refused) != 0 {
		t.Errorf("exits refused %v though their summaries told them apart", d3.refused)
	}
	d3.mu.Unlock()
	// A port no exit's summary holds: refused without trying any.
	if _, err := d3.Dial(ctx, "x", "127.0.0.1:2"); !errors.Is(err, ErrStreamRefused) {
		t.Fatalf("a port no summary holds: %v", err)
	}
	d3.mu.Lock()
	if len(d3.refused) != 0 {
		t.Errorf("an exit was tried for a port its summary lacks: %v", d3.refused)
	}
	d3.mu.Unlock()

	// No exit at all: ErrNoExit.
	d2, _ := NewExitDialer(nodes[0].sw, StaticDirectory(descs(nodes[1], nodes[2])), cfg)
	defer d2.Close()
	if _, err := d2.Dial(ctx, "", target); !errors.Is(err, ErrNoExit) {
		t.Fatalf("no exits: %v", err)
	}
}

// exitToBody starts a destination on 127.0.0.1 that writes body at once
// to each connection and closes it, and a 4-node network whose last
// node exits to it alone (tweak, if not nil, also sets the exit's
// config). It returns the nodes and the destination's address.
func exitToBody(t *testing.T, body []byte, tweak func(*SwitchConfig)) ([]*cnode, string) {
	t.Helper()
	target := destination(t, body)
	nodes := newNet(t, 4, func(i int, cfg *SwitchConfig) {
		if i == 3 {
			cfg.Flags |= proto.FlagExit
			cfg.ExitPolicy = func(ap netip.AddrPort) bool { return ap.String() == target }
			if tweak != nil {
				tweak(cfg)
			}
		}
	})
	return nodes, target
}

// patterned is n cells' worth of bytes that differ from cell to cell.
func patterned(n int, mul byte) []byte {
	body := make([]byte, n*proto.RelayDataSize)
	for i := range body {
		body[i] = byte(i) * mul
	}
	return body
}

// An exit stream sends ExitStartCells before the origin's first stream
// SENDME, then the whole stream window: a long response starts with a
// small first flight, so its head is not queued behind a window's worth
// of cells in every hop.
func TestExitStreamFirstFlight(t *testing.T) {
	noLeaks(t)
	const cells = 300 // more than the first flight, less than a window
	body := patterned(cells, 7)
	nodes, target := exitToBody(t, body, nil)
	first := nodes[3].cfg.ExitStartCells
	if first == 0 || first >= cells || first >= nodes[3].cfg.StreamWindow {
		t.Fatalf("default ExitStartCells %d: the test wants 0 < it < %d", first, cells)
	}
	c := build(t, nodes[0], nodes[1], nodes[2], nodes[3])
	s, err := c.OpenStream(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitUntil(t, "the first flight", func() bool { n, _ := s.queuedCells(); return n >= first })
	// Nothing more comes while the origin reads nothing: the exit waits
	// for its first SENDME (without the first flight, the whole response
	// would be on its way by now).
	if sent := nodes[3].sw.RelayedStats().BytesSent; sent > uint64(first*proto.RelayDataSize) {
		t.Fatalf("the exit sent %d bytes before the first SENDME, more than %d cells hold", sent, first)
	}
	for end := time.Now().Add(100 * time.Millisecond); time.Now().Before(end); {
		if n, _ := s.queuedCells(); n != first {
			t.Fatalf("the origin holds %d cells before any SENDME, want the first flight of %d", n, first)
		}
		runtime.Gosched()
	}
	// Reading earns SENDMEs: the rest comes, then the end.
	s.SetReadDeadline(time.Now().Add(circWait))
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read %d of %d bytes (%v)", len(got), len(body), err)
	}
}

// A response's head goes ahead of its bulk: the exit yields once CONNECTED
// and then the stream's first data cell are queued, so its link's writer
// sends each at once; it reads at most one cell from the destination
// first and gives it its head start once that cell is queued, so the link
// sends it alone; the origin's circuit yields
// to the stream's reader after the stream's first data cell, before the
// rest of the batch it came in. Each is watched at the moment it happens.
func TestStreamHeadGoesFirst(t *testing.T) {
	noLeaks(t)
	const cells = 300 // what the destination writes at once
	body := patterned(cells, 13)
	nodes, target := exitToBody(t, body, nil)
	var mu sync.Mutex
	var exitSent []uint64 // the exit's bytes sent on the stream, at each head start
	var originHeld []int  // cells the origin's circuit had taken in, at each of its yields
	var exitYields []int  // cells the exit had sent on the circuit, at each of its yields
	exit, origin := nodes[3].sw, nodes[0].sw
	exit.mu.Lock() // the switches' goroutines read the hooks after taking mu
	exit.headStart = func() {
		mu.Lock()
		exitSent = append(exitSent, exit.RelayedStats().BytesSent)
		mu.Unlock()
	}
	exit.yield = func() {
		mu.Lock()
		exitYields = append(exitYields, int(exit.RelayedStats().CellsSent))
		mu.Unlock()
	}
	exit.mu.Unlock()
	var c *Circuit
	origin.yield = func() {
		c.ep.mu.Lock()
		n := int(c.ep.pushed)
		c.ep.mu.Unlock()
		mu.Lock()
		originHeld = append(originHeld, n)
		mu.Unlock()
	}
	c = build(t, nodes[0], nodes[1], nodes[2], nodes[3])
	s, err := c.OpenStream(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetReadDeadline(time.Now().Add(circWait))
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read %d of %d bytes (%v)", len(got), len(body), err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(exitSent) != 1 || exitSent[0] == 0 || exitSent[0] > proto.RelayDataSize {
		t.Errorf("the exit gave the head its start with %v bytes sent, want once, after the first cell alone (1..%d bytes)", exitSent, proto.RelayDataSize)
	}
	// CONNECTED, then the head: each leaves before the exit goes on.
	if !slices.Equal(exitYields, []int{1, 2}) {
		t.Errorf("the exit yielded with %v cells sent, want after CONNECTED and after the head ([1 2])", exitYields)
	}
	if len(originHeld) != 1 || originHeld[0] != 1 {
		t.Errorf("the origin's circuit yielded with %v cells taken in, want once, after the first", originHeld)
	}
}

// The exit reads nothing more for its head start once the head is queued:
// the origin gets the head alone, and the rest no sooner than the start
// later (less what the head took to cross). The start is 200 ms here, so
// that a test slowed by a loaded machine still tells the two apart; a
// switch's own start is ExitHeadStart, which Validate bounds.
func TestExitHeadStart(t *testing.T) {
	noLeaks(t)
	const lead = 200 * time.Millisecond
	body := patterned(20, 11)
	nodes, target := exitToBody(t, body, nil)
	exit := nodes[3].sw
	exit.mu.Lock() // the switch's goroutines read the hook after taking mu
	exit.headStart = func() { time.Sleep(lead) }
	exit.mu.Unlock()
	c := build(t, nodes[0], nodes[1], nodes[2], nodes[3])
	s, err := c.OpenStream(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetReadDeadline(time.Now().Add(circWait))
	buf := make([]byte, proto.RelayDataSize)
	_, n, err := s.ReadCell(buf)
	head := time.Now()
	if err != nil || n != proto.RelayDataSize || !bytes.Equal(buf[:n], body[:n]) {
		t.Fatalf("first cell: %d bytes (%v), want the head, %d bytes", n, err, proto.RelayDataSize)
	}
	if queued, _ := s.queuedCells(); queued != 0 {
		t.Fatalf("%d cells came with the head, want it alone", queued)
	}
	rest, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(rest, body[n:]) {
		t.Fatalf("read %d of %d bytes after the head (%v)", len(rest), len(body)-n, err)
	}
	if gap := time.Since(head); gap < lead/2 {
		t.Errorf("the rest came %v after the head, want about the head start (%v)", gap, lead)
	}

	// A switch's start is its ExitHeadStart.
	d := nodes[0].cfg.ExitHeadStart
	if d <= 0 {
		t.Fatalf("default ExitHeadStart %v: want a start", d)
	}
	t0 := time.Now()
	nodes[0].sw.headStart()
	if took := time.Since(t0); took < d {
		t.Errorf("the default head start took %v, want ExitHeadStart (%v)", took, d)
	}
	for _, d := range []time.Duration{-time.Microsecond, maxExitHeadStart + 1} {
		cfg := DefaultSwitchConfig()
		cfg.ExitHeadStart = d
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "ExitHeadStart") {
			t.Errorf("ExitHeadStart %v: %v", d, err)
		}
	}
}

// echoDestination listens on 127.0.0.1 until t ends and answers each
// connection's first read with "got " and what it read, then closes it.
func echoDestination(t *testing.T) (addr string, close func()) {
	return localServer(t, func(c net.Conn) {
		buf := make([]byte, 100)
		n, _ := c.Read(buf)
		c.Write(append([]byte("got "), buf[:n]...))
	})
}

// The exit dialer's optimistic streams: the first stream to a
// destination waits for CONNECTED; later ones on the same circuit are
// returned at once and their BEGIN waits for the first data, or goes
// alone after a while; one closed before its BEGIN left costs the exit
// nothing; a refusal ends the stream.
func TestExitDialerOptimistic(t *testing.T) {
	noLeaks(t)
	echo, stopEcho := echoDestination(t)
	body := destination(t, []byte("the server speaks first"))
	nodes := newNet(t, 4, func(i int, cfg *SwitchConfig) {
		if i == 3 {
			cfg.Flags |= proto.FlagExit
			cfg.ExitPolicy = func(netip.AddrPort) bool { return true }
		}
	})
	claimAllPorts(t, nodes[3:])
	cfg := DefaultExitDialerConfig()
	if !cfg.Optimistic {
		t.Fatal("optimistic streams are off by default")
	}
	d := exitDialer(t, nodes, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), circWait)
	defer cancel()
	exitStreams := func() int { // streams the exit knows, on every circuit
		sw := nodes[3].sw
		sw.mu.Lock()
		var rcs []*relayCirc
		for _, q := range sw.circs {
			if rc, ok := q.(*relayCirc); ok {
				rcs = append(rcs, rc)
			}
		}
		sw.mu.Unlock()
		n := 0
		for _, rc := range rcs {
			n += rc.ep.streamCount()
		}
		return n
	}
	exchange := func(s *Stream, req string) {
		t.Helper()
		defer s.Close()
		if _, err := s.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		s.SetReadDeadline(time.Now().Add(circWait))
		if b, err := io.ReadAll(s); err != nil || string(b) != "got "+req {
			t.Fatalf("read %q %v, want %q", b, err, "got "+req)
		}
	}

	s, err := d.Dial(ctx, "k", echo)
	if err != nil {
		t.Fatal(err)
	}
	if !s.connected {
		t.Fatal("the first stream to a destination did not wait for CONNECTED")
	}
	exchange(s, "one")

	d.beginWait = time.Hour // BEGIN waits for data only
	s, err = d.Dial(ctx, "k", echo)
	if err != nil {
		t.Fatal(err)
	}
	s.e.sendMu.Lock()
	pending := s.begin != nil
	s.e.sendMu.Unlock()
	if !pending || s.connected {
		t.Fatalf("optimistic stream: BEGIN pending %v, connected %v; want BEGIN held for the data", pending, s.connected)
	}
	exchange(s, "two") // BEGIN and the request leave together

	// Closed before any data: the exit never hears of it.
	waitUntil(t, "the exit to forget the streams", func() bool { return exitStreams() == 0 })
	s, err = d.Dial(ctx, "k", echo)
	if err != nil {
		t.Fatal(err)
	}
	sent := s.e.stats.cellsSent.Load()
	s.Close()
	s.e.mu.Lock()
	left := len(s.e.streams)
	s.e.mu.Unlock()
	if left != 0 || s.e.stats.cellsSent.Load() != sent {
		t.Fatalf("closing a stream that never began: %d streams left, %d cells sent", left, s.e.stats.cellsSent.Load()-sent)
	}
	if n := exitStreams(); n != 0 {
		t.Fatalf("the exit has %d streams", n)
	}

	// A server that speaks first: BEGIN goes alone after the wait.
	d.beginWait = 5 * time.Millisecond
	if s, err = d.Dial(ctx, "k", body); err != nil {
		t.Fatal(err)
	}
	if !s.connected {
		t.Fatal("a first stream to another destination did not wait for CONNECTED")
	}
	s.Close()
	if s, err = d.Dial(ctx, "k", body); err != nil {
		t.Fatal(err)
	}
	s.SetReadDeadline(time.Now().Add(circWait))
	if b, err := io.ReadAll(s); err != nil || string(b) != "the server speaks first" {
		t.Fatalf("optimistic stream, nothing written: read %q %v", b, err)
	}
	s.Close()

	// The destination is gone: the optimistic stream ends, empty.
	stopEcho()
	if s, err = d.Dial(ctx, "k", echo); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Write([]byte("three")); err != nil {
		t.Fatal(err)
	}
	s.SetReadDeadline(time.Now().Add(circWait))
	if b, err := io.ReadAll(s); err != nil || len(b) != 0 {
		t.Fatalf("optimistic stream to a closed port: read %q %v, want an empty stream", b, err)
	}
	s.e.mu.Lock()
	reason := s.endReason
	s.e.mu.Unlock()
	if reason != EndConnectRefused {
		t.Fatalf("END reason %d, want %d", reason, EndConnectRefused)
	}
	// That refusal made the circuit forget the destination: the next
	// stream waits for CONNECTED again and reports why it failed.
	var refused *RefusedError
	if s, err := d.Dial(ctx, "k", echo); !errors.As(err, &refused) || refused.Reason != EndConnectRefused {
		if s != nil {
			s.Close()
		}
		t.Fatalf("dial after an optimistic stream was refused: %v, want the exit's refusal", err)
	}
}

// An exit stream takes one goroutine while it resolves and dials (none
// watches for the circuit's end), and the circuit's end still cancels
// its resolution.
func TestExitStreamNoWatcher(t *testing.T) {
	noLeaks(t)
	resolving := make(chan struct{})
	cancelled := make(chan struct{})
	nodes := newNet(t, 4, func(i int, cfg *SwitchConfig) {
		if i == 3 {
			cfg.Flags |= proto.FlagExit
			cfg.ExitPolicy = func(netip.AddrPort) bool { return true }
			cfg.ExitResolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
				close(resolving)
				<-ctx.Done()
				close(cancelled)
				return nil, ctx.Err()
			}
		}
	})
	c := build(t, nodes[0], nodes[1], nodes[2], nodes[3])
	done := make(chan error, 1)
	go func() {
		_, err := c.OpenStream(context.Background(), "slow.example:80")
		done <- err
	}()
	select {
	case <-resolving:
	case <-time.After(circWait):
		t.Fatal("the exit never resolved")
	}
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	if n := strings.Count(stacks, "circuits.(*endpoint).serveExit("); n != 1 {
		t.Fatalf("%d goroutines serve the exit stream, want 1", n)
	}
	if strings.Contains(stacks, "serveExit.func") {
		t.Fatal("a goroutine besides the stream's own waits for its circuit's end")
	}
	c.Close()
	select {
	case <-cancelled:
	case <-time.After(circWait):
		t.Fatal("closing the circuit did not cancel the exit's resolution")
	}
	if err := <-done; err == nil {
		t.Fatal("the stream opened on a closed circuit")
	}
}
