package control

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"veil/cmd/veil/internal/config"
	"veil/proto"
)

// TorVersion is the Tor version the port claims: the protocol level it
// speaks (stem and nyx turn features on by version), marked as veil.
const TorVersion = "0.4.9.0-veil"

// Bounds of the server.
const (
	maxConns      = 64               // controllers at once
	authTimeout   = 60 * time.Second // to authenticate after connecting
	writeTimeout  = 10 * time.Second // for a reply or event to leave
	eventQueueLen = 1024             // events queued per controller; more are dropped
	bwCacheLen    = 300              // seconds of BW events GETINFO bw-event-cache keeps
)

// Backend is what the control port reports on and acts upon: the node.
type Backend interface {
	// ID is the node's ID.
	ID() proto.NodeID
	// Addr is where other nodes reach this one (invalid for a client).
	Addr() netip.AddrPort
	// SOCKSAddr is where the SOCKS port listens ("" when off).
	SOCKSAddr() string
	// Config is the configuration in force.
	Config() config.Config
	// ConfigFile is the configuration file's path.
	ConfigFile() string
	// SetConfig applies a changed configuration (SETCONF, RESETCONF).
	SetConfig(config.Config) error
	// Links are the node's open links.
	Links() []Link
	// Relays are the nodes the node knows (GETINFO ns/*).
	Relays() []Relay
	// Traffic is the bytes read and written on links since the start.
	Traffic() (read, written uint64)
	// NewNym makes new streams use fresh circuits.
	NewNym()
	// Reload reads the configuration again (SIGNAL RELOAD).
	Reload() error
	// Shutdown stops the node (SIGNAL SHUTDOWN, HALT).
	Shutdown()
	// Status is the node's status as JSON (GETINFO veil/status).
	Status(ctx context.Context) ([]byte, error)
}

// Link is one open link to another node.
type Link struct {
	Peer proto.NodeID
	Addr string // the peer's IP:PORT
}

// Config configures a Server.
type Config struct {
	// Listen is the loopback IP:PORT to listen on (port 0: any free one).
	Listen string
	// DataDir is where the cookie file goes.
	DataDir string
	// HashedPassword, if set, is a password in Tor's hashed form.
	HashedPassword string
	// NullAuth lets controllers in without a secret.
	NullAuth bool
	// Backend is the node.
	Backend Backend
	// LogTee, if set, gives controllers the node's log records as events.
	LogTee *LogTee
	// Log receives the server's own messages (nil: discard). Never the
	// LogTee's logger: that would feed events back to themselves.
	Log *slog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Server is a running control port. Start makes one; Close stops it.
type Server struct {
	cfg        Config
	ln         net.Listener
	cookie     [CookieLen]byte
	cookiePath string
	started    time.Time

	mu      sync.Mutex // guards the fields below
	conns   map[*conn]struct{}
	circs   map[uint64]*circState
	streams map[uint64]*streamState
	links   map[proto.NodeID]string
	bwCache [][2]uint64
	lastRW  [2]uint64
	closed  bool

	done chan struct{}
	wg   sync.WaitGroup
}

// Start listens, writes the cookie file and serves until Close.
func Start(cfg Config) (*Server, error) {
	if cfg.Backend == nil {
		return nil, errors.New("control: no backend")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HashedPassword != "" {
		if _, err := CheckPassword(cfg.HashedPassword, ""); err != nil {
			return nil, err
		}
	}
	ap, err := netip.ParseAddrPort(cfg.Listen)
	if err != nil || !ap.Addr().IsLoopback() {
		return nil, fmt.Errorf("control: listen address %q is not a loopback IP:PORT", cfg.Listen)
	}
	s := &Server{
		cfg:        cfg,
		cookiePath: filepath.Join(cfg.DataDir, CookieFile),
		started:    cfg.Now(),
		conns:      map[*conn]struct{}{},
		circs:      map[uint64]*circState{},
		streams:    map[uint64]*streamState{},
		links:      map[proto.NodeID]string{},
		done:       make(chan struct{}),
	}
	if s.cookie, err = writeCookie(s.cookiePath); err != nil {
		return nil, err
	}
	if s.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		os.Remove(s.cookiePath)
		return nil, fmt.Errorf("control port: %w", err)
	}
	if err := os.WriteFile(filepath.Join(cfg.DataDir, AddrFile), []byte(s.ln.Addr().String()+"\n"), 0o600); err != nil {
		s.ln.Close()
		os.Remove(s.cookiePath)
		return nil, fmt.Errorf("control port: %w", err)
	}
	s.lastRW[0], s.lastRW[1] = cfg.Backend.Traffic()
	for _, l := range cfg.Backend.Links() {
		s.links[l.Peer] = l.Addr
	}
	if cfg.LogTee != nil {
		sink := s.logEvent
		cfg.LogTee.st.sink.Store(&sink)
	}
	s.wg.Add(2)
	go s.acceptLoop()
	go s.tickLoop()
	return s, nil
}

// Addr is where the port listens.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// CookiePath is the cookie file's path.
func (s *Server) CookiePath() string { return s.cookiePath }

// Close stops listening, closes the controllers' connections, waits for
// them and removes the cookie file. Idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	close(s.done)
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	if s.cfg.LogTee != nil {
		s.cfg.LogTee.st.sink.Store(nil)
		s.cfg.LogTee.st.min.Store(1 << 62)
	}
	s.ln.Close()
	for _, c := range conns {
		c.nc.Close()
	}
	s.wg.Wait()
	os.Remove(s.cookiePath)
	os.Remove(filepath.Join(s.cfg.DataDir, AddrFile))
	return nil
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.cfg.Log.Warn("control port: accept", "err", err)
			return
		}
		c := newConn(s, nc)
		s.mu.Lock()
		if s.closed || len(s.conns) >= maxConns {
			s.mu.Unlock()
			nc.SetWriteDeadline(time.Now().Add(time.Second))
			io.WriteString(nc, "451 Too many controllers\r\n")
			nc.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(2)
		s.mu.Unlock()
		go c.serve()
		go c.writeEvents()
	}
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.updateLogLevel()
}

// tickLoop emits BW every second and ORCONN as links come and go.
func (s *Server) tickLoop() {
	defer s.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.tick()
		}
	}
}

func (s *Server) tick() {
	r, w := s.cfg.Backend.Traffic()
	links := s.cfg.Backend.Links()
	s.mu.Lock()
	dr, dw := r-s.lastRW[0], w-s.lastRW[1]
	if r < s.lastRW[0] || w < s.lastRW[1] {
		dr, dw = 0, 0
	}
	s.lastRW = [2]uint64{r, w}
	s.bwCache = append(s.bwCache, [2]uint64{dr, dw})
	if len(s.bwCache) > bwCacheLen {
		s.bwCache = slices.Delete(s.bwCache, 0, len(s.bwCache)-bwCacheLen)
	}
	var evs []string
	now := map[proto.NodeID]string{}
	for _, l := range links {
		now[l.Peer] = l.Addr
		if _, ok := s.links[l.Peer]; !ok {
			evs = append(evs, fmt.Sprintf("ORCONN %s CONNECTED ID=%d", longName(l.Peer), idNum(l.Peer)))
		}
	}
	for id := range s.links {
		if _, ok := now[id]; !ok {
			evs = append(evs, fmt.Sprintf("ORCONN %s CLOSED REASON=DONE ID=%d", longName(id), idNum(id)))
		}
	}
	s.links = now
	s.emitLocked("BW", fmt.Sprintf("BW %d %d", dr, dw))
	for _, e := range evs {
		s.emitLocked("ORCONN", e)
	}
	s.mu.Unlock()
}

// idNum is a stable number for a link's ORCONN ID.
func idNum(id proto.NodeID) uint32 {
	return uint32(id[0])<<24 | uint32(id[1])<<16 | uint32(id[2])<<8 | uint32(id[3])
}

// emitLocked queues an event line for each controller that wants event
// (s.mu held). It never blocks: a controller whose queue is full misses
// the event.
func (s *Server) emitLocked(event, line string) {
	var b []byte
	for c := range s.conns {
		if !c.wants(event) {
			continue
		}
		if b == nil {
			b = append(append([]byte("650 "), line...), '\r', '\n')
		}
		select {
		case c.events <- b:
		default:
			c.dropped.Add(1)
		}
	}
}

func (s *Server) emit(event, line string) {
	s.mu.Lock()
	s.emitLocked(event, line)
	s.mu.Unlock()
}

// emitReply queues a multi-line event (CONF_CHANGED).
func (s *Server) emitReply(event string, r reply) {
	b := r.appendTo(nil)
	s.mu.Lock()
	for c := range s.conns {
		if c.wants(event) {
			select {
			case c.events <- b:
			default:
				c.dropped.Add(1)
			}
		}
	}
	s.mu.Unlock()
}

func (s *Server) logEvent(e logEvent) {
	s.emit(e.severity, e.severity+" "+e.msg)
}

// updateLogLevel tells the LogTee the lowest level a controller wants.
func (s *Server) updateLogLevel() {
	if s.cfg.LogTee == nil {
		return
	}
	min := int64(1 << 62)
	s.mu.Lock()
	for c := range s.conns {
		for _, sev := range []string{"DEBUG", "INFO", "NOTICE", "WARN", "ERR"} {
			if c.wants(sev) {
				min = minInt64(min, int64(levelOf(sev)))
			}
		}
	}
	closed := s.closed
	s.mu.Unlock()
	if !closed {
		s.cfg.LogTee.st.min.Store(min)
	}
}

func minInt64(a, b int64) int64 {
	if a < b {
		return a
	}
	return b
}

// conn is one controller's connection. serve owns the reading side and
// the authentication state; writes (replies and events) hold wmu.
type conn struct {
	s  *Server
	nc net.Conn
	r  *bufio.Reader

	wmu sync.Mutex // guards writes to nc

	authed    bool          // owned by serve
	owner     bool          // TAKEOWNERSHIP: the node stops when the connection closes; owned by serve
	challenge *safeCookie   // a pending SAFECOOKIE challenge; owned by serve
	subs      atomicEvents  // the events asked for
	events    chan []byte   // queued event lines
	dropped   atomic.Uint64 // events lost to a full queue
	quit      chan struct{} // closed when serve returns
}

// atomicEvents is the set of events a controller asked for: serve sets
// it, emitters read it.
type atomicEvents struct {
	p atomic.Pointer[map[string]bool]
}

func (a *atomicEvents) has(e string) bool {
	m := a.p.Load()
	return m != nil && (*m)[e]
}

func (a *atomicEvents) set(m map[string]bool) { a.p.Store(&m) }

type safeCookie struct {
	clientNonce, serverNonce []byte
}

func newConn(s *Server, nc net.Conn) *conn {
	return &conn{s: s, nc: nc, r: bufio.NewReaderSize(nc, MaxLineLen), events: make(chan []byte, eventQueueLen), quit: make(chan struct{})}
}

func (c *conn) wants(event string) bool { return c.subs.has(event) }

func (c *conn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := c.nc.Write(b)
	return err
}

// writeEvents sends queued events until the connection ends.
func (c *conn) writeEvents() {
	defer c.s.wg.Done()
	for {
		select {
		case <-c.quit:
			return
		case b := <-c.events:
			if c.write(b) != nil {
				c.nc.Close()
				return
			}
		}
	}
}

// serve reads command lines and answers them until QUIT, an
// authentication failure, an error or the server's Close.
func (c *conn) serve() {
	defer c.s.wg.Done()
	defer close(c.quit)
	defer c.s.forget(c)
	defer c.nc.Close()
	defer c.endOwnership()
	c.nc.SetReadDeadline(time.Now().Add(authTimeout))
	for {
		line, err := c.readLine()
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				c.write(errReply(codeSyntax, "Line too long").appendTo(nil))
			}
			return
		}
		cmd, err := ParseCommand(line)
		if cmd.Data {
			// A "+" command's data block: skip it (bounded), answer it.
			if derr := c.skipData(); derr != nil {
				c.write(errReply(codeSyntax, "Data block too long or unterminated").appendTo(nil))
				return
			}
		}
		var r reply
		closeAfter := false
		switch {
		case errors.Is(err, ErrEmptyLine):
			continue
		case err != nil:
			r = errReply(codeSyntax, "Syntax error: "+strings.TrimPrefix(err.Error(), "control: "))
		default:
			r, closeAfter = c.handle(cmd)
		}
		if werr := c.write(r.appendTo(nil)); werr != nil || closeAfter {
			return
		}
	}
}

// endOwnership stops the node when the connection that took ownership
// ends (QUIT, a closed socket, an error), unless the port itself is
// closing with the node.
func (c *conn) endOwnership() {
	if !c.owner {
		return
	}
	select {
	case <-c.s.done:
		return
	default:
	}
	c.s.cfg.Log.Warn("control port: the owning controller's connection closed: stopping the node (TAKEOWNERSHIP)")
	c.s.cfg.Backend.Shutdown()
}

// readLine reads one line, CRLF or LF ended, at most MaxLineLen long.
func (c *conn) readLine() (string, error) {
	b, err := c.r.ReadSlice('\n')
	if err != nil {
		return "", err
	}
	b = bytes.TrimSuffix(bytes.TrimSuffix(b, []byte{'\n'}), []byte{'\r'})
	return string(b), nil
}

func (c *conn) skipData() error {
	n := 0
	for {
		line, err := c.readLine()
		if err != nil {
			return err
		}
		if n += len(line) + 2; n > MaxDataLen {
			return errors.New("control: data block too long")
		}
		if line == "." {
			return nil
		}
	}
}
