package socks

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"veil/proto"
)

// Errors a Dial function returns (wrapped) to choose the SOCKS reply;
// any other error is a general failure, a context deadline a TTL expiry.
var (
	ErrNotAllowed         = errors.New("socks: not allowed by any exit's policy")
	ErrNetworkUnreachable = errors.New("socks: no exit to reach the network through")
	ErrHostUnreachable    = errors.New("socks: host unreachable")
	ErrConnectionRefused  = errors.New("socks: connection refused")
)

// ReplyCode is the SOCKS5 reply for a failed Dial.
func ReplyCode(err error) byte {
	switch {
	case err == nil:
		return ReplySucceeded
	case errors.Is(err, ErrNotAllowed):
		return ReplyNotAllowed
	case errors.Is(err, ErrNetworkUnreachable):
		return ReplyNetworkUnreachable
	case errors.Is(err, ErrHostUnreachable):
		return ReplyHostUnreachable
	case errors.Is(err, ErrConnectionRefused):
		return ReplyConnectionRefused
	case errors.Is(err, context.DeadlineExceeded):
		return ReplyTTLExpired
	}
	return ReplyGeneralFailure
}

// maxHTTPHeader bounds the request headers of a .veil host's HTTP stream.
const maxHTTPHeader = 16 << 10

// httpIdle closes a .veil host's HTTP stream idle this long between requests.
const httpIdle = 2 * time.Minute

// Config is what a Server serves. Start from DefaultConfig.
type Config struct {
	// Content serves the HTTP requests of streams to "<hash_name>.veil"
	// hosts, on the node itself: such a stream is an HTTP connection to
	// it. A request's Host is the SOCKS destination's host (whatever the
	// client's Host header said). Nil: those hosts are unreachable.
	Content http.Handler
	// Dial opens a stream to any other destination, through a circuit
	// isolated by Request.IsolationKey. Nil: no such stream (network
	// unreachable).
	Dial func(ctx context.Context, req Request) (net.Conn, error)
	// HandshakeTimeout bounds a client's greeting and request;
	// ConnectTimeout bounds Dial.
	HandshakeTimeout, ConnectTimeout time.Duration
	// MaxConns bounds the client connections served at once; more wait
	// in the listener's backlog.
	MaxConns int
	Log      *slog.Logger // nil: discard
}

// DefaultConfig returns the settings veil runs with.
func DefaultConfig() Config {
	return Config{HandshakeTimeout: 10 * time.Second, ConnectTimeout: 60 * time.Second, MaxConns: 512}
}

// Server accepts SOCKS clients on a listener. Serve runs it; Close stops
// it and every connection.
type Server struct {
	cfg  Config
	ln   net.Listener
	http *http.Server
	hl   *chanListener
	sem  chan struct{}

	mu     sync.Mutex // guards conns and closed
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// New returns a server on ln; call Serve.
func New(ln net.Listener, cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	d := DefaultConfig()
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = d.HandshakeTimeout
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = d.ConnectTimeout
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = d.MaxConns
	}
	s := &Server{cfg: cfg, ln: ln, sem: make(chan struct{}, cfg.MaxConns), conns: map[net.Conn]struct{}{}}
	if cfg.Content != nil {
		s.hl = &chanListener{ch: make(chan net.Conn), done: make(chan struct{}), addr: ln.Addr()}
		s.http = &http.Server{
			Handler:           hostFromSOCKS(cfg.Content),
			ReadHeaderTimeout: cfg.HandshakeTimeout,
			MaxHeaderBytes:    maxHTTPHeader,
			IdleTimeout:       httpIdle, // a kept-alive stream holds a MaxConns slot
			ConnContext: func(ctx context.Context, c net.Conn) context.Context {
				if sc, ok := c.(*socksConn); ok {
					ctx = context.WithValue(ctx, requestKey{}, sc.req)
				}
				return ctx
			},
			ErrorLog: slog.NewLogLogger(cfg.Log.Handler(), slog.LevelDebug),
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_ = s.http.Serve(s.hl)
		}()
	}
	return s
}

// Addr is where the server listens.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve accepts clients until Close; it returns nil then.
func (s *Server) Serve() error {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		s.sem <- struct{}{}
		if !s.track(c, true) {
			<-s.sem
			c.Close()
			return nil
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.sem }()
			s.serveConn(c)
		}()
	}
}

// track adds or removes c from the open connections; false if closed.
func (s *Server) track(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closed {
			return false
		}
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
	return true
}

// Close stops accepting, closes every connection and waits for them.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	err := s.ln.Close()
	if s.http != nil {
		s.hl.Close()
		s.http.Close()
	}
	s.wg.Wait()
	return err
}

// VeilHost returns the hash_name of a "<hash_name>.veil" host.
func VeilHost(host string) (proto.HashName, bool, error) {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	label, ok := strings.CutSuffix(h, ".veil")
	if !ok {
		return proto.HashName{}, false, nil
	}
	name, err := proto.ParseHashName(label)
	return name, true, err
}

func (s *Server) serveConn(c net.Conn) {
	defer s.track(c, false)
	handedOver := false
	defer func() {
		if !handedOver {
			c.Close()
		}
	}()
	c.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	br := bufio.NewReaderSize(c, 512)
	req, err := Handshake(br, c)
	if err != nil {
		s.cfg.Log.Debug("socks handshake", "err", err)
		return
	}
	c.SetDeadline(time.Time{})
	sc := &socksConn{Conn: c, r: br, req: req}
	if _, isVeil, err := VeilHost(req.Host); isVeil {
		if err != nil || s.http == nil {
			WriteReply(c, req, ReplyHostUnreachable)
			return
		}
		if WriteReply(c, req, ReplySucceeded) != nil {
			return
		}
		// The HTTP server owns the connection now; Close reaches it
		// through s.conns until it is closed.
		if s.hl.give(sc) {
			handedOver = true
			<-sc.closed()
		}
		return
	}
	if s.cfg.Dial == nil {
		WriteReply(c, req, ReplyNetworkUnreachable)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ConnectTimeout)
	up, err := s.cfg.Dial(ctx, req)
	cancel()
	if err != nil {
		s.cfg.Log.Info("socks connect failed", "err", err)
		WriteReply(c, req, ReplyCode(err))
		return
	}
	defer up.Close()
	if WriteReply(c, req, ReplySucceeded) != nil {
		return
	}
	pipe(sc, up)
}

// pipe copies both ways until either side ends, then closes both.
func pipe(a, b net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(b, a)
		closeWrite(b)
	}()
	io.Copy(a, b)
	a.Close()
	b.Close()
	<-done
}

// closeWrite half-closes c if it can, so the other side sees the end of
// what this side sent and may still answer; otherwise it closes it.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// socksConn is a client connection after its handshake: reads go through
// the handshake's buffer first, so no byte the client sent early is lost.
type socksConn struct {
	net.Conn
	r    *bufio.Reader
	req  Request
	once sync.Once
	done chan struct{}
	mu   sync.Mutex
}

func (c *socksConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *socksConn) closed() <-chan struct{} { return c.doneChan() }

func (c *socksConn) doneChan() chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
	}
	return c.done
}

func (c *socksConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.doneChan()) })
	return err
}

// CloseWrite half-closes the client connection when it is TCP.
func (c *socksConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// chanListener hands connections to the HTTP server.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

func (l *chanListener) give(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

type requestKey struct{}

// RequestOf returns the SOCKS request whose stream carries an HTTP request
// the Content handler serves.
func RequestOf(ctx context.Context) (Request, bool) {
	r, ok := ctx.Value(requestKey{}).(Request)
	return r, ok
}

// hostFromSOCKS makes r.Host the SOCKS destination's host, so that a Host
// header cannot name another content than the stream was opened to.
func hostFromSOCKS(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if req, ok := RequestOf(r.Context()); ok {
			r.Host = req.Host
		}
		h.ServeHTTP(w, r)
	})
}
