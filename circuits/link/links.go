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

	mu        sync.Mutex // guards the fields below
	byID      map[proto.NodeID]*Link
	all       map[*Link]struct{}
	pending   int // handshakes in progress (count against MaxLinks)
	dials     map[proto.NodeID]*dialCall
	listeners []net.Listener
	closed    bool

	wg        sync.WaitGroup // accept loops, handshakes, dials, links
	closeOnce sync.Once

	traffic trafficCounters // bytes on every link's socket (traffic.go)
}

// dialCall lets concurrent Gets for one ID share a dial.
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
		key:    key,
		cfg:    cfg,
		ctx:    ctx,
		cancel: cancel,
		byID:   make(map[proto.NodeID]*Link),
		all:    make(map[*Link]struct{}),
		dials:  make(map[proto.NodeID]*dialCall),
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
		if err := m.reserve(); err != nil {
			_ = conn.Close()
			continue
		}
		m.wg.Add(1)
		go m.accept(conn)
	}
}

// reserve counts a handshake against MaxLinks.
func (m *Links) reserve() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrLinksClosed
	}
	if len(m.all)+m.pending >= m.cfg.MaxLinks {
		return fmt.Errorf("%w (%d)", ErrTooManyLinks, m.cfg.MaxLinks)
	}
	m.pending++
	return nil
}

func (m *Links) unreserve() {
	m.mu.Lock()
	m.pending--
	m.mu.Unlock()
}

// accept runs the server side of a handshake.
func (m *Links) accept(conn net.Conn) {
	defer m.wg.Done()
	raw := &deadlineConn{Conn: conn, traffic: &m.traffic}
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.HandshakeTimeout)
	defer cancel()
	_ = conn.SetDeadline(time.Now().Add(m.cfg.HandshakeTimeout))
	tc := tls.Server(raw, m.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = conn.Close()
		m.unreserve()
		return
	}
	key, err := peerKeyFromState(tc.ConnectionState())
	if err != nil {
		_ = conn.Close()
		m.unreserve()
		return
	}
	_ = conn.SetDeadline(time.Time{})
	_, _ = m.register(tc, raw, key, true)
}

// register turns a handshaken connection into a running link.
func (m *Links) register(tc *tls.Conn, raw *deadlineConn, key ed25519.PublicKey, inbound bool) (*Link, error) {
	m.mu.Lock()
	m.pending--
	if m.closed {
		m.mu.Unlock()
		_ = raw.Close()
		return nil, ErrLinksClosed
	}
	l := newLink(m, tc, raw, key, inbound)
	m.all[l] = struct{}{}
	if cur := m.byID[l.peer]; cur == nil {
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
	delete(m.all, l)
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

// Get returns the open link to id, dialing addr if there is none. The dial
// checks that the peer's identity key hashes to id, failing with a
// *PeerIDError otherwise. Concurrent Gets for one id share one dial, which
// runs to completion (bounded by HandshakeTimeout) even if ctx ends first.
func (m *Links) Get(ctx context.Context, id proto.NodeID, addr string) (*Link, error) {
	if m.cfgErr != nil {
		return nil, m.cfgErr
	}
	if id == m.self {
		return nil, ErrSelfLink
	}
	if l := m.Lookup(id); l != nil {
		return l, nil
	}
	m.mu.Lock()
	dc := m.dials[id]
	if dc == nil {
		switch {
		case m.closed:
			m.mu.Unlock()
			return nil, ErrLinksClosed
		case addr == "":
			m.mu.Unlock()
			return nil, fmt.Errorf("%w (%s)", ErrNoAddr, id)
		case len(m.all)+m.pending >= m.cfg.MaxLinks:
			m.mu.Unlock()
			return nil, fmt.Errorf("%w (%d)", ErrTooManyLinks, m.cfg.MaxLinks)
		}
		m.pending++
		dc = &dialCall{done: make(chan struct{})}
		m.dials[id] = dc
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			dc.l, dc.err = m.dial(id, addr)
			m.mu.Lock()
			delete(m.dials, id)
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
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		m.unreserve()
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
		m.unreserve()
		if idErr != nil {
			return nil, idErr
		}
		return nil, fmt.Errorf("link: TLS handshake with %s at %s: %w", id.Short(), addr, err)
	}
	key, err := peerKeyFromState(tc.ConnectionState())
	if err != nil {
		_ = conn.Close()
		m.unreserve()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return m.register(tc, raw, key, false)
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
