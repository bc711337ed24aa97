package link

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"veil/proto"
)

// waitFor bounds every wait in these tests.
const waitFor = 10 * time.Second

// leakCheck fails the test if goroutines started during it are still
// running (after a bounded wait) once its other cleanups have run. Call it
// first so its cleanup runs last.
func leakCheck(t testing.TB) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(waitFor)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("goroutine leak: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				return
			}
			runtime.Gosched()
		}
	})
}

// identity is a node's Ed25519 identity key and the ID derived from it.
type identity struct {
	Key ed25519.PrivateKey
	ID  proto.NodeID
}

func newIdentity(t testing.TB) *identity {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &identity{Key: key, ID: proto.NodeIDFromKey(key.Public().(ed25519.PublicKey))}
}

func (id *identity) PublicKey() ed25519.PublicKey { return id.Key.Public().(ed25519.PublicKey) }

type closedEvent struct {
	l   Conn
	err error
}

// testNode is a Links listening on 127.0.0.1 whose handlers report to
// channels (or to the handlers a test supplies).
type testNode struct {
	id     *identity
	m      *Links
	addr   string
	cells  chan *proto.Cell
	vars   chan proto.VarCell // payload copied
	closed chan closedEvent
}

func newTestNode(t *testing.T, cfg Config, h *Handlers) *testNode {
	t.Helper()
	id := newIdentity(t)
	n := &testNode{
		id:     id,
		m:      NewLinks(id.Key, cfg),
		cells:  make(chan *proto.Cell, 1024),
		vars:   make(chan proto.VarCell, 1024),
		closed: make(chan closedEvent, 64),
	}
	if h == nil {
		h = &Handlers{
			Cell: func(l Conn, c *proto.Cell) { n.cells <- c },
			Var: func(l Conn, v proto.VarCell) {
				v.Payload = bytes.Clone(v.Payload)
				n.vars <- v
			},
		}
	}
	hh := *h
	user := hh.Closed
	hh.Closed = func(l Conn, err error) {
		if user != nil {
			user(l, err)
		}
		select {
		case n.closed <- closedEvent{l, err}:
		default:
		}
	}
	n.m.SetHandlers(hh)
	addr, err := n.m.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.addr = addr.String()
	t.Cleanup(func() { n.m.Close() })
	return n
}

func (n *testNode) get(t *testing.T, to *testNode) *Link {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	l, err := n.m.Get(ctx, to.id.ID, to.addr)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	return l
}

func (n *testNode) nextClosed(t *testing.T) closedEvent {
	t.Helper()
	select {
	case ev := <-n.closed:
		return ev
	case <-time.After(waitFor):
		t.Fatal("no link closed")
		return closedEvent{}
	}
}

func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitFor):
		var zero T
		t.Fatal("nothing received")
		return zero
	}
}

// recvCell is recv for cells (a generic version trips a go1.26 compiler
// bug on array-typed elements).
func recvCell(t *testing.T, ch <-chan *proto.Cell) *proto.Cell {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(waitFor):
		t.Fatal("no cell received")
		return nil
	}
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.HandshakeTimeout = 5 * time.Second
	cfg.CloseTimeout = time.Second
	return cfg
}

func makeCell(circ uint32, cmd proto.Command, fill byte) *proto.Cell {
	c := proto.GetCell()
	c.SetCircID(circ)
	c.SetCommand(cmd)
	p := c.Payload()
	for i := range p {
		p[i] = fill + byte(i)
	}
	return c
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for name, edit := range map[string]func(*Config){
		"MaxLinks":          func(c *Config) { c.MaxLinks = 0 },
		"SendQueueBytes":    func(c *Config) { c.SendQueueBytes = 100 },
		"HandshakeTimeout":  func(c *Config) { c.HandshakeTimeout = 0 },
		"KeepaliveInterval": func(c *Config) { c.KeepaliveInterval = c.IdleTimeout },
		"ReadBufferSize":    func(c *Config) { c.ReadBufferSize = 10 },
	} {
		c := DefaultConfig()
		edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: got %v, want an error naming it", name, err)
		}
		m := NewLinks(newIdentity(t).Key, c)
		if _, err := m.Listen("127.0.0.1:0"); err == nil {
			t.Errorf("%s: Listen with a bad config succeeded", name)
		}
		m.Close()
	}
	// The identity key is checked too.
	m := NewLinks(nil, DefaultConfig())
	if _, err := m.Listen("127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), "identity key") {
		t.Errorf("Listen without an identity key: %v", err)
	}
	m.Close()
}

func TestLinkMutualAuth(t *testing.T) {
	leakCheck(t)
	a := newTestNode(t, testConfig(), nil)
	b := newTestNode(t, testConfig(), nil)
	if a.m.ID() != a.id.ID {
		t.Fatalf("Links.ID %s, want the identity key's %s", a.m.ID(), a.id.ID)
	}
	lb := b.get(t, a)
	if lb.Peer() != a.id.ID || !lb.PeerKey().Equal(a.id.PublicKey()) || lb.Inbound() {
		t.Fatalf("dialer sees peer %s, want %s", lb.Peer(), a.id.ID)
	}
	if err := lb.SendCell(makeCell(1, proto.CmdRelay, 0)); err != nil {
		t.Fatal(err)
	}
	c := recvCell(t, a.cells)
	proto.PutCell(c)
	la := a.m.Lookup(b.id.ID)
	if la == nil || la.Peer() != b.id.ID || !la.PeerKey().Equal(b.id.PublicKey()) || !la.Inbound() {
		t.Fatal("listener did not learn the dialer's ID")
	}
	// Get reuses the link, whichever side dialed.
	if again := b.get(t, a); again != lb {
		t.Fatal("Get dialed a second link")
	}
	if back, err := a.m.Get(context.Background(), b.id.ID, ""); err != nil || back != la {
		t.Fatalf("Get on the listener side: %v", err)
	}
	if _, err := a.m.Get(context.Background(), a.id.ID, b.addr); !errors.Is(err, ErrSelfLink) {
		t.Fatalf("link to self: %v", err)
	}
	if a.m.Len() != 1 || b.m.Len() != 1 {
		t.Fatalf("links: %d and %d, want 1 each", a.m.Len(), b.m.Len())
	}
}

func TestLinkConcurrentGetSharesDial(t *testing.T) {
	leakCheck(t)
	a := newTestNode(t, testConfig(), nil)
	b := newTestNode(t, testConfig(), nil)
	var wg sync.WaitGroup
	links := make([]*Link, 8)
	for i := range links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := b.m.Get(context.Background(), a.id.ID, a.addr)
			if err != nil {
				t.Error(err)
			}
			links[i] = l
		}()
	}
	wg.Wait()
	for _, l := range links {
		if l != links[0] {
			t.Fatal("concurrent Gets made more than one link")
		}
	}
}

func TestLinkWrongID(t *testing.T) {
	leakCheck(t)
	a := newTestNode(t, testConfig(), nil)
	b := newTestNode(t, testConfig(), nil)
	other := newIdentity(t)
	_, err := b.m.Get(context.Background(), other.ID, a.addr)
	if !errors.Is(err, ErrPeerID) {
		t.Fatalf("got %v, want ErrPeerID", err)
	}
	want := fmt.Sprintf("link: peer at %s has ID %s, want %s", a.addr, a.id.ID, other.ID)
	if err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
	if b.m.Len() != 0 || b.m.Lookup(a.id.ID) != nil {
		t.Fatal("a refused link was kept")
	}
}

// rawDial opens a plain TCP connection to n with a bounded deadline.
func rawDial(t *testing.T, n *testNode) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", n.addr, waitFor)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(waitFor))
	t.Cleanup(func() { conn.Close() })
	return conn
}

// expectRefused reads until the peer closes conn and fails if it never does.
func expectRefused(t *testing.T, conn io.Reader) {
	t.Helper()
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("connection not closed by the listener")
	}
}

func TestLinkRefusesGarbage(t *testing.T) {
	leakCheck(t)
	a := newTestNode(t, testConfig(), nil)
	conn := rawDial(t, a)
	if _, err := conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	expectRefused(t, conn)
	if a.m.Len() != 0 {
		t.Fatal("garbage made a link")
	}
}

func TestLinkRefusesBadClientCerts(t *testing.T) {
	leakCheck(t)
	a := newTestNode(t, testConfig(), nil)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotAfter: time.Now().Add(time.Hour)}
	ecDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ecKey.PublicKey, ecKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, certs := range map[string][]tls.Certificate{
		"no certificate": nil,
		"ECDSA":          {{Certificate: [][]byte{ecDER}, PrivateKey: ecKey}},
	} {
		conn := tls.Client(rawDial(t, a), &tls.Config{
			MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, Certificates: certs,
		})
		// In TLS 1.3 the client finishes first; the refusal shows on read.
		_ = conn.Handshake()
		_, err := conn.Read(make([]byte, 1))
		var ne net.Error
		if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Fatalf("%s: not refused (%v)", name, err)
		}
		if a.m.Len() != 0 {
			t.Fatalf("%s: made a link", name)
		}
	}
}

// encodeSeq tags a payload with a sender and sequence number and fills the
// rest with a pattern derived from them.
func encodeSeq(p []byte, sender, seq uint32) {
	binary.BigEndian.PutUint32(p, sender)
	binary.BigEndian.PutUint32(p[4:], seq)
	for i := 8; i < len(p); i++ {
		p[i] = byte(sender*31 + seq + uint32(i))
	}
}

func checkSeq(p []byte) (sender, seq uint32, ok bool) {
	if len(p) < 8 {
		return 0, 0, false
	}
	sender, seq = binary.BigEndian.Uint32(p), binary.BigEndian.Uint32(p[4:])
	for i := 8; i < len(p); i++ {
		if p[i] != byte(sender*31+seq+uint32(i)) {
			return sender, seq, false
		}
	}
	return sender, seq, true
}

// orderChecker records per-sender sequence numbers and reports gaps,
// reordering and corrupt payloads.
type orderChecker struct {
	mu   sync.Mutex
	next map[uint32]uint32
	n    int
	bad  error
	all  chan struct{}
	want int
}

func (o *orderChecker) see(p []byte, circ uint32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	sender, seq, ok := checkSeq(p)
	switch {
	case !ok:
		o.bad = fmt.Errorf("corrupt payload from sender %d seq %d", sender, seq)
	case circ != sender:
		o.bad = fmt.Errorf("circ %d carries sender %d", circ, sender)
	case seq != o.next[sender]:
		o.bad = fmt.Errorf("sender %d: got seq %d, want %d", sender, seq, o.next[sender])
	}
	o.next[sender] = seq + 1
	if o.n++; o.n == o.want {
		close(o.all)
	}
}

func TestLinkCellsBothWaysInOrder(t *testing.T) {
	leakCheck(t)
	const senders, perSender = 4, 1000 // per direction, each sending fixed and var cells
	newChecker := func() *orderChecker {
		return &orderChecker{next: map[uint32]uint32{}, all: make(chan struct{}), want: 2 * senders * perSender}
	}
	checkA, checkB := newChecker(), newChecker()
	arrivedOn := make(chan Conn, 1) // the listener's end, from its first cell
	handlers := func(o *orderChecker) *Handlers {
		return &Handlers{
			Cell: func(l Conn, c *proto.Cell) {
				select {
				case arrivedOn <- l:
				default:
				}
				if c.Command() != proto.CmdRelay {
					o.mu.Lock()
					o.bad = fmt.Errorf("command %v", c.Command())
					o.mu.Unlock()
				}
				o.see(c.Payload(), c.CircID())
				proto.PutCell(c)
			},
			Var: func(l Conn, v proto.VarCell) { o.see(v.Payload, v.CircID) },
		}
	}
	a := newTestNode(t, testConfig(), handlers(checkA))
	b := newTestNode(t, testConfig(), handlers(checkB))
	lb := b.get(t, a)

	var wg sync.WaitGroup
	send := func(l *Link, sender uint32) {
		defer wg.Done()
		for seq := uint32(0); seq < 2*perSender; seq++ {
			var err error
			if seq%2 == 0 {
				c := proto.GetCell()
				c.SetCircID(sender)
				c.SetCommand(proto.CmdRelay)
				encodeSeq(c.Payload(), sender, seq)
				err = l.SendCell(c)
			} else {
				size := 8 + int(seq*131)%1024
				if seq%101 == 1 {
					size = proto.MaxVarPayload
				}
				p := make([]byte, size)
				encodeSeq(p, sender, seq)
				err = l.SendVar(proto.VarCell{CircID: sender, Command: proto.CmdDHT, Payload: p})
			}
			if err != nil {
				t.Error(err)
				return
			}
		}
	}
	// The dialer starts; the listener's end is known once a cell reached
	// it, and only b dialed, so the first cell on either side is on it.
	for s := uint32(0); s < senders; s++ {
		wg.Add(1)
		go send(lb, s)
	}
	la := recv(t, arrivedOn).(*Link)
	if la.Peer() != b.id.ID || !la.Inbound() || a.m.Lookup(b.id.ID) != la {
		t.Fatal("cells arrived on a link that is not the listener's end")
	}
	for s := uint32(0); s < senders; s++ {
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
}

// rawPeer completes a link handshake as a well-behaved TLS client with a
// valid identity, then lets the test write arbitrary bytes.
func rawPeer(t *testing.T, n *testNode) *tls.Conn {
	t.Helper()
	cert, err := linkCertificate(newIdentity(t).Key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	conn := tls.Client(rawDial(t, n), linkTLSConfig(cert))
	if err := conn.Handshake(); err != nil {
		t.Fatal(err)
	}
	return conn
}

func TestLinkProtocolViolations(t *testing.T) {
	leakCheck(t)
	a := newTestNode(t, testConfig(), nil)
	cases := []struct {
		name  string
		bytes []byte
		want  error
	}{
		{"unknown fixed command", append(make([]byte, 4), append([]byte{7}, make([]byte, 509)...)...), proto.ErrUnknownCommand},
		{"unknown var command", []byte{0, 0, 0, 1, 200, 0, 1, 'x'}, proto.ErrUnknownCommand},
		{"var cell too long", []byte{0, 0, 0, 1, byte(proto.CmdDHT), 0xff, 0xff}, proto.ErrTooLong},
	}
	for _, c := range cases {
		conn := rawPeer(t, a)
		// A good cell first: the violation must close an established link.
		good := makeCell(5, proto.CmdRelay, 1)
		if _, err := conn.Write(good[:]); err != nil {
			t.Fatal(err)
		}
		proto.PutCell(recvCell(t, a.cells))
		if _, err := conn.Write(c.bytes); err != nil {
			t.Fatal(err)
		}
		ev := a.nextClosed(t)
		if !errors.Is(ev.err, c.want) {
			t.Errorf("%s: link closed with %v, want %v", c.name, ev.err, c.want)
		}
		expectRefused(t, conn)
	}
	if a.m.Len() != 0 {
		t.Fatal("links left open")
	}
}

func TestLinkMaxLinks(t *testing.T) {
	leakCheck(t)
	cfg := testConfig()
	cfg.MaxLinks = 2
	a := newTestNode(t, cfg, nil)
	var dialers []*testNode
	for i := 0; i < 2; i++ {
		d := newTestNode(t, testConfig(), nil)
		l := d.get(t, a)
		if err := l.SendCell(makeCell(1, proto.CmdRelay, 0)); err != nil {
			t.Fatal(err)
		}
		proto.PutCell(recvCell(t, a.cells)) // a has registered the link
		dialers = append(dialers, d)
	}
	// A third inbound link is refused.
	third := newTestNode(t, testConfig(), nil)
	l, err := third.m.Get(context.Background(), a.id.ID, a.addr)
	if err == nil {
		// TLS 1.3 lets the client finish first; the link then dies.
		ev := third.nextClosed(t)
		if ev.l != l {
			t.Fatal("unexpected link closed")
		}
	}
	if a.m.Len() != 2 {
		t.Fatalf("listener has %d links, want 2", a.m.Len())
	}
	// Outbound Gets are bounded too.
	if _, err := a.m.Get(context.Background(), third.id.ID, third.addr); !errors.Is(err, ErrTooManyLinks) {
		t.Fatalf("Get beyond MaxLinks: %v", err)
	}
	// Closing one frees a slot.
	a.m.Lookup(dialers[0].id.ID).Close()
	a.nextClosed(t)
	if _, err := a.m.Get(context.Background(), third.id.ID, third.addr); err != nil {
		t.Fatalf("Get after a slot freed: %v", err)
	}
}

func TestLinkCloseEndsBothSides(t *testing.T) {
	leakCheck(t)
	a := newTestNode(t, testConfig(), nil)
	b := newTestNode(t, testConfig(), nil)
	for _, dialerCloses := range []bool{true, false} {
		lb := b.get(t, a)
		// Cells queued just before Close still arrive: Close flushes.
		const n = 100
		for i := 0; i < n; i++ {
			if err := lb.SendCell(makeCell(uint32(i), proto.CmdRelay, byte(i))); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < n; i++ {
			c := recvCell(t, a.cells)
			if c.CircID() != uint32(i) || c.Payload()[10] != byte(i)+10 {
				t.Fatalf("cell %d: circ %d", i, c.CircID())
			}
			proto.PutCell(c)
		}
		la := a.m.Lookup(b.id.ID)
		closer, other := lb, la
		closerNode, otherNode := b, a
		if !dialerCloses {
			closer, other, closerNode, otherNode = la, lb, a, b
		}
		if err := closer.Close(); err != nil {
			t.Fatal(err)
		}
		closer.Close() // idempotent
		if ev := closerNode.nextClosed(t); ev.l != closer || !errors.Is(ev.err, ErrClosed) {
			t.Fatalf("closing side: %v", ev.err)
		}
		if ev := otherNode.nextClosed(t); ev.l != other || !errors.Is(ev.err, ErrClosedByPeer) {
			t.Fatalf("other side: %v, want ErrClosedByPeer", ev.err)
		}
		<-closer.Done()
		<-other.Done()
		if err := closer.SendCell(makeCell(1, proto.CmdRelay, 0)); err == nil {
			t.Fatal("SendCell after Close succeeded")
		}
		if err := other.SendVar(proto.VarCell{Command: proto.CmdDHT}); err == nil {
			t.Fatal("SendVar after the peer closed succeeded")
		}
		if a.m.Len() != 0 || b.m.Len() != 0 {
			t.Fatal("closed links still counted")
		}
	}
	// Links.Close ends the peer's links too, and is idempotent.
	b.get(t, a)
	b.m.Close()
	b.m.Close()
	if ev := a.nextClosed(t); !errors.Is(ev.err, ErrClosedByPeer) {
		t.Fatalf("after Links.Close, peer sees %v", ev.err)
	}
	if _, err := b.m.Get(context.Background(), a.id.ID, a.addr); !errors.Is(err, ErrLinksClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
}

func TestLinkRejectsBadCells(t *testing.T) {
	leakCheck(t)
	a := newTestNode(t, testConfig(), nil)
	b := newTestNode(t, testConfig(), nil)
	l := b.get(t, a)
	if err := l.SendCell(makeCell(1, proto.CmdDHT, 0)); !errors.Is(err, ErrBadCell) {
		t.Fatalf("var command in a fixed cell: %v", err)
	}
	if err := l.SendCell(makeCell(1, proto.Command(7), 0)); !errors.Is(err, ErrBadCell) {
		t.Fatalf("unknown command: %v", err)
	}
	if err := l.SendVar(proto.VarCell{Command: proto.CmdRelay}); !errors.Is(err, ErrBadCell) {
		t.Fatalf("fixed command in a var cell: %v", err)
	}
	if err := l.SendVar(proto.VarCell{Command: proto.CmdDHT, Payload: make([]byte, proto.MaxVarPayload+1)}); !errors.Is(err, ErrBadCell) {
		t.Fatalf("oversized var cell: %v", err)
	}
	// The link survives all of that.
	if err := l.SendVar(proto.VarCell{Command: proto.CmdDHT, Payload: []byte("ok")}); err != nil {
		t.Fatal(err)
	}
	if v := recv(t, a.vars); string(v.Payload) != "ok" {
		t.Fatalf("got %q", v.Payload)
	}
}

// framedCell is one cell a link delivers to its handlers: the bytes of a
// fixed cell other than PADDING, or of a var cell, as on the wire.
type framedCell struct {
	isVar bool
	wire  []byte
}

// expectFramed walks the link framing of b by hand, the way the framing is
// drawn in the package comment, and returns the cells a link must deliver
// from it, in order, and whether b ends cleanly after the last cell (else
// something unframeable or a cut cell follows).
func expectFramed(b []byte) (cells []framedCell, clean bool) {
	for {
		if len(b) == 0 {
			return cells, true
		}
		if len(b) < 5 {
			return cells, false
		}
		cmd := proto.Command(b[4])
		switch {
		case !cmd.Known():
			return cells, false
		case cmd >= 128:
			if len(b) < 7 {
				return cells, false
			}
			n := 7 + int(b[5])<<8 + int(b[6])
			if n > 7+proto.MaxVarPayload || len(b) < n {
				return cells, false
			}
			cells = append(cells, framedCell{true, b[:n]})
			b = b[n:]
		default:
			if len(b) < 514 {
				return cells, false
			}
			if cmd != proto.CmdPadding {
				cells = append(cells, framedCell{false, b[:514]})
			}
			b = b[514:]
		}
	}
}

// recordingLink returns a link that reads nothing from the network and
// whose handlers append what they get to *got.
func recordingLink(t *testing.T, got *[]framedCell) *Link {
	m := &Links{cfg: DefaultConfig(), h: Handlers{
		Cell: func(l Conn, c *proto.Cell) {
			*got = append(*got, framedCell{false, bytes.Clone(c[:])})
			proto.PutCell(c)
		},
		Var: func(l Conn, v proto.VarCell) {
			*got = append(*got, framedCell{true, v.Append(nil)})
		},
	}}
	return newLink(m, nil, nil, make([]byte, 32), true)
}

// FuzzLinkRead feeds arbitrary bytes to a link's reader: the handlers must
// get exactly the fixed (non-PADDING) and var cells the bytes frame, in
// order and byte for byte, and the read must end with ErrClosedByPeer if
// the bytes end after a cell and with another error otherwise.
func FuzzLinkRead(f *testing.F) {
	cell := makeCell(9, proto.CmdRelay, 3)
	var seed []byte
	seed = cell.Append(seed)
	seed = proto.VarCell{CircID: 1, Command: proto.CmdDHT, Payload: []byte("ping")}.Append(seed)
	seed = append(seed, paddingCell[:]...)
	f.Add(seed)
	f.Add(seed[:600])
	f.Add(append(seed, proto.VarCell{CircID: 2, Command: proto.CmdDHT, Payload: make([]byte, proto.MaxVarPayload)}.Append(nil)...))
	f.Add([]byte{0, 0, 0, 1, byte(proto.CmdDHT), 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 1, 7})
	f.Fuzz(func(t *testing.T, b []byte) {
		var got []framedCell
		err := recordingLink(t, &got).read(bytes.NewReader(b))
		want, clean := expectFramed(b)
		if len(got) != len(want) {
			t.Fatalf("delivered %d cells, the input frames %d", len(got), len(want))
		}
		for i := range want {
			if got[i].isVar != want[i].isVar || !bytes.Equal(got[i].wire, want[i].wire) {
				t.Fatalf("cell %d delivered differs from the input's", i)
			}
		}
		switch {
		case err == nil:
			t.Fatal("read ended without an error")
		case clean != errors.Is(err, ErrClosedByPeer):
			t.Fatalf("input ends cleanly %v, read ended with %v", clean, err)
		}
	})
}

func TestLinkReadFraming(t *testing.T) {
	var in []byte
	for i := 0; i < 50; i++ {
		in = makeCell(uint32(i), proto.CmdRelay, byte(i)).Append(in)
		in = append(in, paddingCell[:]...)
		in = proto.VarCell{CircID: uint32(i), Command: proto.CmdDHT, Payload: bytes.Repeat([]byte{byte(i)}, i*100)}.Append(in)
	}
	var next uint32
	var vnext uint32
	m := &Links{cfg: DefaultConfig(), h: Handlers{
		Cell: func(l Conn, c *proto.Cell) {
			if c.CircID() != next || c.Payload()[7] != byte(next)+7 {
				t.Fatalf("cell %d: got circ %d", next, c.CircID())
			}
			next++
			proto.PutCell(c)
		},
		Var: func(l Conn, v proto.VarCell) {
			if v.CircID != vnext || !bytes.Equal(v.Payload, bytes.Repeat([]byte{byte(vnext)}, int(vnext)*100)) {
				t.Fatalf("var cell %d wrong", vnext)
			}
			vnext++
		},
	}}
	l := newLink(m, nil, nil, make([]byte, 32), true)
	if err := l.read(bytes.NewReader(in)); !errors.Is(err, ErrClosedByPeer) {
		t.Fatalf("clean end of stream: %v", err)
	}
	if next != 50 || vnext != 50 {
		t.Fatalf("got %d cells and %d var cells, want 50 each", next, vnext)
	}
	// A stream cut inside a cell is not a clean close.
	l = newLink(m, nil, nil, make([]byte, 32), true)
	next, vnext = 0, 0
	if err := l.read(bytes.NewReader(in[:proto.CellSize+10])); err == nil || errors.Is(err, ErrClosedByPeer) {
		t.Fatalf("cut stream: %v", err)
	}
}

func TestLinkCloseDuringSendsAndFromHandler(t *testing.T) {
	leakCheck(t)
	cfg := testConfig()
	cfg.SendQueueBytes = 32 << 10
	var closer *testNode
	closer = newTestNode(t, cfg, &Handlers{Cell: func(l Conn, c *proto.Cell) {
		// Closing from inside a handler must not deadlock.
		if c.CircID() == 999 {
			l.(*Link).Close()
		}
		proto.PutCell(c)
	}})
	b := newTestNode(t, cfg, nil)
	l := b.get(t, closer)
	var wg sync.WaitGroup
	var accepted, refused atomic.Int64
	for s := 0; s < 4; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Keep sending until the close refuses a send: the kernel's
			// loopback buffers can hold megabytes, so a fixed count could
			// all be accepted before the handler reads cell 999. The bound
			// only stops a broken close from looping forever.
			for i := 0; i < 1<<20; i++ {
				circ := uint32(1)
				if i == 2000 {
					circ = 999
				}
				if err := l.SendCell(makeCell(circ, proto.CmdRelay, 0)); err != nil {
					refused.Add(1)
					return
				}
				accepted.Add(1)
			}
		}()
	}
	wg.Wait()
	ev := closer.nextClosed(t)
	if !errors.Is(ev.err, ErrClosed) {
		t.Fatalf("handler-closed link ended with %v", ev.err)
	}
	if ev := b.nextClosed(t); !errors.Is(ev.err, ErrClosedByPeer) {
		t.Fatalf("peer of a handler-closed link saw %v", ev.err)
	}
	if refused.Load() == 0 {
		t.Fatal("every send succeeded on a link closed midway")
	}
	if accepted.Load() < 2000 {
		t.Fatalf("only %d sends accepted before the close", accepted.Load())
	}
}
