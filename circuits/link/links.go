package link

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"sync"
	"time"

	"veil/proto"
)

// Links errors.
var (
	ErrLinksClosed  = errors.New("link: links closed")
	ErrTooManyLinks = errors.New("link: too many links")
	ErrSelfLink     = errors.New("link: refusing a link to ourselves")
	ErrNoAddr       = errors.New("link: no link to peer and no address to dial")
	ErrBadPeerCert  = errors.New("link: bad peer certificate")
)

// linkALPN names the link protocol in the TLS handshake.
const linkALPN = "veil/1"

// Links is a node's set of links: it accepts authenticated links, dials
// them on demand and keeps at most one in use per peer ID (Lookup). Each
// link runs a read goroutine that dispatches to the handlers and a write
// goroutine. Safe for concurrent use.
type Links struct {
	key    ed25519.PrivateKey
	self   proto.NodeID // our ID, derived from key
	cfg    Config
	cfgErr error // from NewLinks; returned by Listen and Get
	h      Handlers
	tls    *tls.Config
	ctx    context.Context // cancelled by Close: aborts handshakes
	cancel context.CancelFunc

	mu         sync.Mutex // guards the fields below
	byID       map[proto.NodeID]*Link
	all        map[*Link]struct{}
	nIn, nOut  int                  // links in all by who opened them
	pendingIn  int                  // inbound handshakes in progress
	pendingOut int                  // dials in progress
	perSubnet  map[netip.Prefix]int // inbound links and handshakes by the peer's /24 or /48
	dials      map[dialKey]*dialCall
	listeners  []net.Listener
	closed     bool

	wg        sync.WaitGroup // accept loops, handshakes, dials, links
	closeOnce sync.Once

	traffic traffic // bytes on every link's socket (Traffic)
}

// dialKey names a dial: Gets share one only if they name the same ID at
// the same address, so that a dial to a bad address (an EXTEND2 naming a
// blackhole under an honest node's ID) does not hold up, or fail, a Get
// naming the node's real address.
type dialKey struct {
	id   proto.NodeID
	addr string
}

// dialCall lets concurrent Gets for one ID and address share a dial.
type dialCall struct {
	done chan struct{}
	l    *Link
	err  error
}

// NewLinks returns a link manager for the node whose Ed25519 identity key
// is key; the node's ID is proto.NodeIDFromKey of its public half. An
// invalid cfg or key, or a failure to make the certificate, is reported by
// Listen and Get.
func NewLinks(key ed25519.PrivateKey, cfg Config) *Links {
	ctx, cancel := context.WithCancel(context.Background())
	m := &Links{
		key:       key,
		cfg:       cfg,
		ctx:       ctx,
		cancel:    cancel,
		byID:      make(map[proto.NodeID]*Link),
		all:       make(map[*Link]struct{}),
		dials:     make(map[dialKey]*dialCall),
		perSubnet: make(map[netip.Prefix]int),
	}
	if m.cfgErr = cfg.Validate(); m.cfgErr != nil {
		return m
	}
	if len(key) != ed25519.PrivateKeySize {
		m.cfgErr = fmt.Errorf("link: identity key of %d bytes, want %d", len(key), ed25519.PrivateKeySize)
		return m
	}
	m.self = proto.NodeIDFromKey(key.Public().(ed25519.PublicKey))
	cert, err := linkCertificate(key, time.Now())
	if err != nil {
		m.cfgErr = err
		return m
	}
	m.tls = linkTLSConfig(cert)
	return m
}

// linkCertificate makes the self-signed certificate a node presents on its
// links. Only its key matters: peers ignore names and dates.
func linkCertificate(key ed25519.PrivateKey, now time.Time) (tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("link: certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "veil"},
		NotBefore:    now.Add(-24 * time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("link: making the certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// linkTLSConfig is the TLS setup of both ends: TLS 1.3 only, a certificate
// required from both sides, and instead of chain checks our own: exactly
// one self-signed Ed25519 certificate. TLS 1.3's CertificateVerify proves
// the peer holds the key.
func linkTLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{cert},
		ClientAuth:             tls.RequireAnyClientCert,
		InsecureSkipVerify:     true, // replaced by VerifyPeerCertificate below
		VerifyPeerCertificate:  func(raw [][]byte, _ [][]*x509.Certificate) error { _, err := peerKeyFromCerts(raw); return err },
		SessionTicketsDisabled: true, // every link authenticates afresh
		NextProtos:             []string{linkALPN},
	}
}

// peerKeyFromCerts returns the Ed25519 key of the single self-signed
// certificate a peer presented.
func peerKeyFromCerts(raw [][]byte) (ed25519.PublicKey, error) {
	if len(raw) != 1 {
		return nil, fmt.Errorf("%w: %d certificates, want 1", ErrBadPeerCert, len(raw))
	}
	cert, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPeerCert, err)
	}
	key, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: %T key, want Ed25519", ErrBadPeerCert, cert.PublicKey)
	}
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		return nil, fmt.Errorf("%w: not self-signed: %v", ErrBadPeerCert, err)
	}
	return key, nil
}

func peerKeyFromState(cs tls.ConnectionState) (ed25519.PublicKey, error) {
	if len(cs.PeerCertificates) != 1 {
		return nil, fmt.Errorf("%w: %d certificates, want 1", ErrBadPeerCert, len(cs.PeerCertificates))
	}
	key, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: not an Ed25519 key", ErrBadPeerCert)
	}
	return key, nil
}

// SetHandlers installs the handlers. Call it before Listen and Get: links
// keep the handlers they started with.
func (m *Links) SetHandlers(h Handlers) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.h = h
}

// ID returns this node's ID, the one peers authenticate us as.
func (m *Links) ID() proto.NodeID { return m.self }

// Listen accepts links on addr (host:port; port 0 picks one) until Close
// and returns the address it listens on. It may be called more than once.
func (m *Links) Listen(addr string) (net.Addr, error) {
	if m.cfgErr != nil {
		return nil, m.cfgErr
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("link: listening: %w", err)
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		_ = ln.Close()
		return nil, ErrLinksClosed
	}
	m.listeners = append(m.listeners, ln)
	m.wg.Add(1)
	m.mu.Unlock()
	go m.acceptLoop(ln)
	return ln.Addr(), nil
}

func (m *Links) acceptLoop(ln net.Listener) {
	defer m.wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || m.ctx.Err() != nil {
				return
			}
			// Out of descriptors or similar: back off briefly, stop on Close.
			select {
			case <-m.ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		subnet := SubnetOf(conn.RemoteAddr())
		if err := m.reserveIn(subnet); err != nil {
			_ = conn.Close()
			continue
		}
		m.wg.Add(1)
		go m.accept(conn, subnet)
	}
}

// SubnetOf is the network an address's inbound links count against for
// Config.MaxInboundPerSubnet: its IPv4 /24 or IPv6 /48 (an IPv4-mapped
// IPv6 address counts as IPv4). It is the zero Prefix for an address that
// is not IP (a net.Pipe), which no bound applies to.
func SubnetOf(a net.Addr) netip.Prefix {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return netip.Prefix{}
	}
	ip = ip.Unmap()
	bits := 24
	if ip.Is6() {
		bits = 48
	}
	p, _ := ip.Prefix(bits)
	return p
}

// reserveIn counts an inbound handshake from subnet against MaxLinks,
// MaxInbound, MaxHandshakes and MaxInboundPerSubnet.
func (m *Links) reserveIn(subnet netip.Prefix) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return ErrLinksClosed
	case len(m.all)+m.pendingIn+m.pendingOut >= m.cfg.MaxLinks:
		return fmt.Errorf("%w (%d)", ErrTooManyLinks, m.cfg.MaxLinks)
	case m.nIn+m.pendingIn >= m.cfg.MaxInbound:
		return fmt.Errorf("%w: %d inbound", ErrTooManyLinks, m.cfg.MaxInbound)
	case m.pendingIn >= m.cfg.MaxHandshakes:
		return fmt.Errorf("%w: %d handshakes in progress", ErrTooManyLinks, m.cfg.MaxHandshakes)
	case subnet.IsValid() && m.cfg.MaxInboundPerSubnet > 0 && m.perSubnet[subnet] >= m.cfg.MaxInboundPerSubnet:
		return fmt.Errorf("%w: %d inbound from %v", ErrTooManyLinks, m.cfg.MaxInboundPerSubnet, subnet)
	}
	m.pendingIn++
	if subnet.IsValid() {
		m.perSubnet[subnet]++
	}
	return nil
}

// reserveOut counts a dial against MaxLinks and MaxOutbound. Caller holds mu.
func (m *Links) reserveOutLocked() error {
	switch {
	case m.closed:
		return ErrLinksClosed
	case len(m.all)+m.pendingIn+m.pendingOut >= m.cfg.MaxLinks:
		return fmt.Errorf("%w (%d)", ErrTooManyLinks, m.cfg.MaxLinks)
	case m.nOut+m.pendingOut >= m.cfg.MaxOutbound:
		return fmt.Errorf("%w: %d outbound", ErrTooManyLinks, m.cfg.MaxOutbound)
	}
	m.pendingOut++
	return nil
}

// unreserve gives back the slot of a handshake that failed.
func (m *Links) unreserve(inbound bool, subnet netip.Prefix) {
	m.mu.Lock()
	if inbound {
		m.pendingIn--
		m.dropSubnetLocked(subnet)
	} else {
		m.pendingOut--
	}
	m.mu.Unlock()
}

func (m *Links) dropSubnetLocked(subnet netip.Prefix) {
	if !subnet.IsValid() {
		return
	}
	if m.perSubnet[subnet]--; m.perSubnet[subnet] <= 0 {
		delete(m.perSubnet, subnet)
	}
}

// accept runs the server side of a handshake.
func (m *Links) accept(conn net.Conn, subnet netip.Prefix) {
	defer m.wg.Done()
	raw := &deadlineConn{Conn: conn, traffic: &m.traffic}
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.HandshakeTimeout)
	defer cancel()
	_ = conn.SetDeadline(time.Now().Add(m.cfg.HandshakeTimeout))
	tc := tls.Server(raw, m.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = conn.Close()
		m.unreserve(true, subnet)
		return
	}
	key, err := peerKeyFromState(tc.ConnectionState())
	if err != nil {
		_ = conn.Close()
		m.unreserve(true, subnet)
		return
	}
	_ = conn.SetDeadline(time.Time{})
	_, _ = m.register(tc, raw, key, true, subnet)
}

// register turns a handshaken connection into a running link.
func (m *Links) register(tc *tls.Conn, raw *deadlineConn, key ed25519.PublicKey, inbound bool, subnet netip.Prefix) (*Link, error) {
	m.mu.Lock()
	if inbound {
		m.pendingIn--
	} else {
		m.pendingOut--
	}
	if m.closed {
		if inbound {
			m.dropSubnetLocked(subnet)
		}
		m.mu.Unlock()
		_ = raw.Close()
		return nil, ErrLinksClosed
	}
	l := newLink(m, tc, raw, key, inbound)
	l.subnet = subnet // the inbound slot it holds until remove
	m.all[l] = struct{}{}
	if inbound {
		m.nIn++
	} else {
		m.nOut++
	}
	if cur := m.byID[l.peer]; cur == nil || cur.Err() != nil {
		m.byID[l.peer] = l
	}
	m.wg.Add(1) // done by the link's last goroutine (Link.exit)
	m.mu.Unlock()
	l.start()
	return l, nil
}

// remove forgets a closed link, promoting another link to the same peer.
func (m *Links) remove(l *Link) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.all[l]; !ok {
		return
	}
	delete(m.all, l)
	if l.inbound {
		m.nIn--
		m.dropSubnetLocked(l.subnet)
	} else {
		m.nOut--
	}
	if m.byID[l.peer] != l {
		return
	}
	delete(m.byID, l.peer)
	for o := range m.all {
		if o.peer == l.peer && o.Err() == nil {
			m.byID[l.peer] = o
			break
		}
	}
}

// Lookup returns an open link to id, or nil.
func (m *Links) Lookup(id proto.NodeID) *Link {
	m.mu.Lock()
	l := m.byID[id]
	m.mu.Unlock()
	if l == nil || l.Err() != nil {
		return nil
	}
	return l
}

// Len returns the number of links, open or closing.
func (m *Links) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.all)
}

// Get returns an open link to id at addr's IP, dialing addr if there is
// none; with addr "" it returns any open link to id (ErrNoAddr if there is
// none). The dial checks that the peer's identity key hashes to id,
// failing with a *PeerIDError otherwise. Concurrent Gets for one id and
// addr share one dial, which runs to completion (bounded by
// HandshakeTimeout) even if ctx ends first; Gets naming other addresses
// dial on their own.
//
// Why the address matters although the link authenticates the ID: a
// client keeps two hops of its circuit out of one /16 by the addresses it
// names in EXTEND2. Reusing a link the peer opened from elsewhere would
// let a node list an address in a foreign network while it really sits
// next to the other hops. A link whose remote IP is the one named proves
// the peer is reachable there, so it is reused (an inbound link's port is
// the peer's ephemeral source port, so only the IP is compared).
func (m *Links) Get(ctx context.Context, id proto.NodeID, addr string) (*Link, error) {
	if m.cfgErr != nil {
		return nil, m.cfgErr
	}
	if id == m.self {
		return nil, ErrSelfLink
	}
	if addr == "" {
		if l := m.Lookup(id); l != nil {
			return l, nil
		}
		return nil, fmt.Errorf("%w (%s)", ErrNoAddr, id)
	}
	want, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("link: dialing %s: address %q: %w", id.Short(), addr, err)
	}
	key := dialKey{id, addr}
	m.mu.Lock()
	if l := m.linkAtLocked(id, want.Addr()); l != nil {
		m.mu.Unlock()
		return l, nil
	}
	dc := m.dials[key]
	if dc == nil {
		if err := m.reserveOutLocked(); err != nil {
			m.mu.Unlock()
			return nil, err
		}
		dc = &dialCall{done: make(chan struct{})}
		m.dials[key] = dc
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			dc.l, dc.err = m.dial(id, addr)
			m.mu.Lock()
			delete(m.dials, key)
			m.mu.Unlock()
			close(dc.done)
		}()
	}
	m.mu.Unlock()
	select {
	case <-dc.done:
		return dc.l, dc.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// linkAtLocked returns an open link to id whose remote IP is ip, or nil.
// Caller holds mu.
func (m *Links) linkAtLocked(id proto.NodeID, ip netip.Addr) *Link {
	ip = ip.Unmap()
	at := func(l *Link) bool {
		if l.peer != id || l.Err() != nil {
			return false
		}
		ta, ok := l.RemoteAddr().(*net.TCPAddr)
		if !ok {
			return false
		}
		got, ok := netip.AddrFromSlice(ta.IP)
		return ok && got.Unmap() == ip
	}
	if l := m.byID[id]; l == nil {
		return nil // no link to id at all
	} else if at(l) {
		return l
	}
	for l := range m.all {
		if at(l) {
			return l
		}
	}
	return nil
}

// Dial is Get for the layers that see links as Conns: it makes *Links a
// Dialer.
func (m *Links) Dial(ctx context.Context, id proto.NodeID, addr string) (Conn, error) {
	l, err := m.Get(ctx, id, addr)
	if err != nil {
		return nil, err // not a nil *Link in a non-nil Conn
	}
	return l, nil
}

// dial runs the client side of a handshake; its slot is already reserved.
func (m *Links) dial(id proto.NodeID, addr string) (*Link, error) {
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.HandshakeTimeout)
	defer cancel()
	var d net.Dialer
	if m.cfg.SourceAddr.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(m.cfg.SourceAddr, 0))
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		m.unreserve(false, netip.Prefix{})
		return nil, fmt.Errorf("link: dialing %s at %s: %w", id.Short(), addr, err)
	}
	return m.handshake(ctx, conn, id, addr)
}

// handshake runs the client side of a handshake on conn, which it owns,
// refusing a peer whose key does not hash to id; its slot is reserved.
func (m *Links) handshake(ctx context.Context, conn net.Conn, id proto.NodeID, addr string) (*Link, error) {
	raw := &deadlineConn{Conn: conn, traffic: &m.traffic}
	_ = conn.SetDeadline(time.Now().Add(m.cfg.HandshakeTimeout))
	conf := m.tls.Clone()
	var idErr *PeerIDError
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		key, err := peerKeyFromState(cs)
		if err != nil {
			return err
		}
		if got := proto.NodeIDFromKey(key); got != id {
			idErr = &PeerIDError{Addr: addr, Got: got, Want: id}
			return idErr
		}
		return nil
	}
	tc := tls.Client(raw, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = conn.Close()
		m.unreserve(false, netip.Prefix{})
		if idErr != nil {
			return nil, idErr
		}
		return nil, fmt.Errorf("link: TLS handshake with %s at %s: %w", id.Short(), addr, err)
	}
	key, err := peerKeyFromState(tc.ConnectionState())
	if err != nil {
		_ = conn.Close()
		m.unreserve(false, netip.Prefix{})
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return m.register(tc, raw, key, false, netip.Prefix{})
}

// Close stops listening, aborts handshakes, closes every link cleanly and
// waits for all goroutines, handlers' Closed calls included. Idempotent.
func (m *Links) Close() error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		lns := m.listeners
		links := make([]*Link, 0, len(m.all))
		for l := range m.all {
			links = append(links, l)
		}
		m.mu.Unlock()
		m.cancel()
		for _, ln := range lns {
			_ = ln.Close()
		}
		for _, l := range links {
			l.Close()
		}
	})
	m.wg.Wait()
	return nil
}
