package control

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"veil/circuits"
	"veil/cmd/veil/internal/config"
	"veil/proto"
)

// fakeNode is a Backend whose state a test sets.
type fakeNode struct {
	mu       sync.Mutex
	cfg      config.Config
	links    []Link
	read     uint64
	newnyms  int
	reloads  int
	shutdown chan struct{}
	file     string // the configuration file SAVECONF writes
}

func newFakeNode(dir string) *fakeNode {
	c := config.Default()
	c.DataDir = dir
	return &fakeNode{cfg: c, shutdown: make(chan struct{}, 1), file: filepath.Join(dir, "veil.toml")}
}

var fakeID = proto.NodeID{0xab, 0xcd, 0xef, 0x01, 0x23}

func (f *fakeNode) ID() proto.NodeID { return fakeID }
func (f *fakeNode) Addr() netip.AddrPort {
	return netip.MustParseAddrPort("127.0.0.1:7700")
}
func (f *fakeNode) Config() config.Config {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cfg
}
func (f *fakeNode) ConfigFile() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.file
}
func (f *fakeNode) SOCKSAddr() string { return "127.0.0.1:7750" }
func (f *fakeNode) SetConfig(c config.Config) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cfg = c
	return nil
}
func (f *fakeNode) Links() []Link {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Link(nil), f.links...)
}
func (f *fakeNode) Relays() []Relay {
	return []Relay{
		{ID: proto.NodeID{1}, Addr: netip.MustParseAddrPort("127.0.0.1:7701"), Flags: proto.FlagRelay, Published: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		{ID: proto.NodeID{2}, Addr: netip.MustParseAddrPort("[::1]:7702"), Flags: proto.FlagRelay},
		{ID: proto.NodeID{3}, Addr: netip.MustParseAddrPort("127.0.0.3:7703"), Flags: proto.FlagExit, Published: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
	}
}

func (f *fakeNode) Traffic() (uint64, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.read += 1000
	return f.read, 2 * f.read
}
func (f *fakeNode) NewNym() {
	f.mu.Lock()
	f.newnyms++
	f.mu.Unlock()
}
func (f *fakeNode) Reload() error {
	f.mu.Lock()
	f.reloads++
	f.mu.Unlock()
	return nil
}
func (f *fakeNode) Shutdown() {
	select {
	case f.shutdown <- struct{}{}:
	default:
	}
}
func (f *fakeNode) Status(context.Context) ([]byte, error) {
	return []byte(`{"id":"abc"}`), nil
}

func startServer(t *testing.T, mod func(*Config)) (*Server, *fakeNode) {
	t.Helper()
	dir := t.TempDir()
	f := newFakeNode(dir)
	cfg := Config{Listen: "127.0.0.1:0", DataDir: dir, Backend: f}
	if mod != nil {
		mod(&cfg)
	}
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, f
}

// client is a raw controller: it sends lines and reads whole replies.
type client struct {
	t      *testing.T
	c      net.Conn
	r      *bufio.Reader
	events [][]string // events read while waiting for a reply
}

func dial(t *testing.T, s *Server) *client {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &client{t: t, c: c, r: bufio.NewReader(c)}
}

// readReply reads lines up to the end of one reply ("CODE " line) and
// returns them with data blocks inlined.
func (c *client) readReply() ([]string, error) {
	var lines []string
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			return lines, err
		}
		if !strings.HasSuffix(l, "\r\n") {
			return lines, fmt.Errorf("line without CRLF: %q", l)
		}
		l = strings.TrimSuffix(l, "\r\n")
		lines = append(lines, l)
		if len(l) < 4 {
			return lines, fmt.Errorf("short line %q", l)
		}
		switch l[3] {
		case ' ':
			return lines, nil
		case '+':
			for {
				d, err := c.r.ReadString('\n')
				if err != nil {
					return lines, err
				}
				d = strings.TrimSuffix(d, "\r\n")
				if d == "." {
					break
				}
				lines = append(lines, "  "+d)
			}
		}
	}
}

func (c *client) do(line string) []string {
	c.t.Helper()
	if _, err := io.WriteString(c.c, line+"\r\n"); err != nil {
		c.t.Fatalf("%s: %v", line, err)
	}
	for {
		r, err := c.readReply()
		if err != nil {
			c.t.Fatalf("%s: %v (read %q)", line, err, r)
		}
		if strings.HasPrefix(r[0], "650") { // an event may come before the reply
			c.events = append(c.events, r)
			continue
		}
		return r
	}
}

// event returns the next event.
func (c *client) event() ([]string, error) {
	if len(c.events) > 0 {
		e := c.events[0]
		c.events = c.events[1:]
		return e, nil
	}
	return c.readReply()
}

// closed reports whether the server closed the connection.
func (c *client) closed() bool {
	_, err := c.r.ReadByte()
	return errors.Is(err, io.EOF) || err != nil && strings.Contains(err.Error(), "reset")
}

func (c *client) auth(s *Server) {
	c.t.Helper()
	cookie, err := ReadCookie(filepath.Dir(s.CookiePath()))
	if err != nil {
		c.t.Fatal(err)
	}
	if r := c.do("AUTHENTICATE " + hex.EncodeToString(cookie)); r[0] != "250 OK" {
		c.t.Fatalf("authenticate: %q", r)
	}
}

func TestProtocolInfoAndCookie(t *testing.T) {
	s, _ := startServer(t, nil)
	fi, err := os.Stat(s.CookiePath())
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != CookieLen {
		t.Fatalf("cookie file: %v %v", fi, err)
	}
	c := dial(t, s)
	r := c.do("PROTOCOLINFO 1")
	want := []string{
		"250-PROTOCOLINFO 1",
		"250-AUTH METHODS=COOKIE,SAFECOOKIE COOKIEFILE=" + Quote(s.CookiePath()),
		`250-VERSION Tor="0.4.9.0-veil"`,
		"250 OK",
	}
	if strings.Join(r, "\n") != strings.Join(want, "\n") {
		t.Fatalf("PROTOCOLINFO:\n%s\nwant\n%s", strings.Join(r, "\n"), strings.Join(want, "\n"))
	}
	c.auth(s)
	if r := c.do("GETINFO version"); r[0] != "250-version=0.4.9.0-veil" || r[1] != "250 OK" {
		t.Fatalf("GETINFO version: %q", r)
	}
	s.Close()
	if _, err := os.Stat(s.CookiePath()); !os.IsNotExist(err) {
		t.Fatalf("cookie file left after Close: %v", err)
	}
}

func TestNothingBeforeAuth(t *testing.T) {
	s, _ := startServer(t, nil)
	for _, cmd := range []string{"GETINFO version", "SETEVENTS BW", "SIGNAL NEWNYM", "GETCONF listen", "FOO"} {
		c := dial(t, s)
		if r := c.do(cmd); r[0] != "514 Authentication required." || !c.closed() {
			t.Errorf("%s before auth: %q, connection open", cmd, r)
		}
	}
	c := dial(t, s)
	if r := c.do("QUIT"); !strings.HasPrefix(r[0], "250 ") || !c.closed() {
		t.Errorf("QUIT: %q", r)
	}
}

func TestWrongSecrets(t *testing.T) {
	hashed, err := HashPassword("hunter2")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := startServer(t, func(c *Config) { c.HashedPassword = hashed })
	wrong := make([]byte, CookieLen)
	rand.Read(wrong)
	for _, cmd := range []string{
		"AUTHENTICATE " + hex.EncodeToString(wrong),
		"AUTHENTICATE",
		`AUTHENTICATE "hunter3"`,
		"AUTHENTICATE zz",
		`AUTHENTICATE "unterminated`,
	} {
		c := dial(t, s)
		if r := c.do(cmd); !strings.HasPrefix(r[0], "515 Authentication failed") || !c.closed() {
			t.Errorf("%s: %q, or connection left open", cmd, r)
		}
	}
	// The right password works, quoted or hex.
	for _, cmd := range []string{`AUTHENTICATE "hunter2"`, "AUTHENTICATE " + hex.EncodeToString([]byte("hunter2"))} {
		c := dial(t, s)
		if r := c.do(cmd); r[0] != "250 OK" {
			t.Errorf("%s: %q", cmd, r)
		}
	}
	c := dial(t, s)
	if r := c.do("PROTOCOLINFO"); !strings.Contains(r[1], "METHODS=COOKIE,SAFECOOKIE,HASHEDPASSWORD ") {
		t.Errorf("methods with a password: %q", r)
	}
}

func TestSafeCookie(t *testing.T) {
	s, _ := startServer(t, nil)
	cookie, _ := ReadCookie(filepath.Dir(s.CookiePath()))
	for _, right := range []bool{true, false} {
		c := dial(t, s)
		nonce := make([]byte, 32)
		rand.Read(nonce)
		r := c.do("AUTHCHALLENGE SAFECOOKIE " + hex.EncodeToString(nonce))
		var sh, sn string
		if _, err := fmt.Sscanf(r[0], "250 AUTHCHALLENGE SERVERHASH=%64s SERVERNONCE=%64s", &sh, &sn); err != nil {
			t.Fatalf("AUTHCHALLENGE: %q: %v", r, err)
		}
		serverNonce, _ := hex.DecodeString(sn)
		wantServer, client := SafeCookieHashes(cookie, nonce, serverNonce)
		if !strings.EqualFold(sh, hex.EncodeToString(wantServer)) {
			t.Fatalf("server hash %s, want %x", sh, wantServer)
		}
		if !right {
			client[0] ^= 1
		}
		r = c.do("AUTHENTICATE " + hex.EncodeToString(client))
		if right && r[0] != "250 OK" {
			t.Fatalf("right safe cookie answer: %q", r)
		}
		if !right && (r[0] != "515 Authentication failed: Safe cookie response did not match expected value." || !c.closed()) {
			t.Fatalf("wrong safe cookie answer: %q", r)
		}
	}
	// The cookie itself does not do once a challenge is pending.
	c := dial(t, s)
	c.do("AUTHCHALLENGE SAFECOOKIE 00")
	if r := c.do("AUTHENTICATE " + hex.EncodeToString(cookie)); r[0][:3] != "515" {
		t.Fatalf("plain cookie after a challenge: %q", r)
	}
	c = dial(t, s)
	if r := c.do("AUTHCHALLENGE HMAC 00"); r[0] != "512 AUTHCHALLENGE only supports SAFECOOKIE authentication" {
		t.Fatalf("other method: %q", r)
	}
}

func TestNullAuth(t *testing.T) {
	s, _ := startServer(t, func(c *Config) { c.NullAuth = true })
	c := dial(t, s)
	if r := c.do("PROTOCOLINFO 1"); !strings.Contains(r[1], "METHODS=NULL,COOKIE,SAFECOOKIE ") {
		t.Fatalf("methods: %q", r)
	}
	if r := c.do("AUTHENTICATE"); r[0] != "250 OK" {
		t.Fatalf("null auth: %q", r)
	}
}

func TestHashedPasswordVector(t *testing.T) {
	// What tor --hash-password foo gives with salt 660537E3E1CD4999.
	const h = "16:660537E3E1CD49996044A3BF558097A981F539FEA2F9DA662B4626C1C2"
	if ok, err := CheckPassword(h, "foo"); !ok || err != nil {
		t.Fatalf("foo: %v %v", ok, err)
	}
	if ok, _ := CheckPassword(h, "fop"); ok {
		t.Fatal("fop accepted")
	}
	for _, bad := range []string{"", "16:", "16:zz", h[:len(h)-2], "17" + h[2:]} {
		if _, err := CheckPassword(bad, "foo"); err == nil {
			t.Errorf("%q accepted as a hash", bad)
		}
	}
	mine, _ := HashPassword("bar")
	if ok, _ := CheckPassword(mine, "bar"); !ok || config.Default().Control.HashedPassword != "" {
		t.Fatalf("own hash %s", mine)
	}
}

func TestGetInfo(t *testing.T) {
	s, f := startServer(t, nil)
	f.links = []Link{{Peer: proto.NodeID{1}, Addr: "127.0.0.1:1"}}
	c := dial(t, s)
	c.auth(s)
	fp := Fingerprint(fakeID)
	for key, want := range map[string]string{
		"fingerprint":            "250-fingerprint=" + fp,
		"address":                "250-address=127.0.0.1",
		"net/listeners/control":  "250-net/listeners/control=" + Quote(s.Addr()),
		"net/listeners/or":       `250-net/listeners/or="127.0.0.1:7700"`,
		"net/listeners/socks":    `250-net/listeners/socks="127.0.0.1:7750"`,
		"net/listeners/dns":      "250-net/listeners/dns=",
		"accounting/enabled":     "250-accounting/enabled=0",
		"status/version/current": "250-status/version/current=unknown",
		"config-file":            "250-config-file=" + f.file,
		"process/pid":            fmt.Sprintf("250-process/pid=%d", os.Getpid()),
		"veil/status":            `250-veil/status={"id":"abc"}`,
		"orconn-status":          "250+orconn-status=",
	} {
		if r := c.do("GETINFO " + key); r[0] != want || r[len(r)-1] != "250 OK" {
			t.Errorf("GETINFO %s: %q, want %q first", key, r, want)
		}
	}
	if r := c.do("GETINFO orconn-status"); r[1] != "  "+longName(proto.NodeID{1})+" CONNECTED" {
		t.Errorf("orconn-status: %q", r)
	}
	// Several keys at once, in order; an unknown one fails the whole command.
	if r := c.do("GETINFO version uptime"); len(r) != 3 || !strings.HasPrefix(r[1], "250-uptime=") {
		t.Errorf("two keys: %q", r)
	}
	if r := c.do("GETINFO version exit-policy/full"); len(r) != 1 || r[0] != `552 Unrecognized key "exit-policy/full"` {
		t.Errorf("unknown key: %q", r)
	}
	if r := c.do("GETINFO net/listeners/nonsense"); r[0][:3] != "552" {
		t.Errorf("unknown listener kind: %q", r)
	}
	if r := c.do("GETINFO"); r[0][:3] != "512" {
		t.Errorf("no key: %q", r)
	}
	// Every event name of the spec is listed, and SETEVENTS takes them all.
	r := c.do("GETINFO events/names")
	names := strings.TrimPrefix(r[0], "250-events/names=")
	if r := c.do("SETEVENTS EXTENDED " + names); r[0] != "250 OK" {
		t.Errorf("SETEVENTS every event: %q", r)
	}
	if r := c.do("SETEVENTS BW NOSUCH"); r[0] != `552 Unrecognized event "NOSUCH"` {
		t.Errorf("unknown event: %q", r)
	}
	// Known nodes as router status entries (IPv4 only, as Tor's).
	r1 := "r veil01000000 AQAAAAAAAAAAAAAAAAAAAAAAAAA "
	if r := c.do("GETINFO ns/id/" + Fingerprint(proto.NodeID{1})); len(r) != 4 || !strings.HasPrefix(r[1], "  "+r1) ||
		!strings.HasSuffix(r[1], " 2026-01-02 03:04:05 127.0.0.1 7701 0") || r[2] != "  s Running Valid" {
		t.Errorf("ns/id: %q", r)
	}
	if r := c.do("GETINFO ns/all"); len(r) != 6 || r[4] != "  s Exit Running Valid" {
		t.Errorf("ns/all: %q", r)
	}
	if r := c.do("GETINFO ns/id/" + Fingerprint(proto.NodeID{2})); r[0][:3] != "552" {
		t.Errorf("ns/id of a node without IPv4: %q", r)
	}
	if r := c.do("GETINFO ns/name/" + Nickname(proto.NodeID{3})); len(r) != 4 {
		t.Errorf("ns/name: %q", r)
	}
	// config/names lists veil's keys with their types.
	r = c.do("GETINFO config/names")
	if !contains(r, "  tunnels.hops Integer") || !contains(r, "  bridges LineList") || !contains(r, "  control.listen String") {
		t.Errorf("config/names: %q", r)
	}
}

func contains(lines []string, l string) bool {
	for _, x := range lines {
		if x == l {
			return true
		}
	}
	return false
}

func TestConf(t *testing.T) {
	s, f := startServer(t, nil)
	c := dial(t, s)
	c.auth(s)
	if r := c.do("GETCONF tunnels.hops Log BandwidthRate NoSuchTorOption ControlSocket"); strings.Join(r, "|") !=
		"250-tunnels.hops=3|250-Log=warn stderr|250-BandwidthRate=1073741824|250-NoSuchTorOption|250 ControlSocket" {
		t.Errorf("GETCONF: %q", r)
	}
	c.do("SETEVENTS CONF_CHANGED")
	if r := c.do("SETCONF log_level=debug"); r[0] != "250 OK" {
		t.Fatalf("SETCONF log_level: %q", r)
	}
	if ev, _ := c.event(); strings.Join(ev, "|") != "650-CONF_CHANGED|650-log_level=debug|650 OK" {
		t.Errorf("CONF_CHANGED: %q", ev)
	}
	if f.Config().LogLevel != "debug" {
		t.Errorf("log_level not applied: %q", f.Config().LogLevel)
	}
	if r := c.do(`SETCONF bridges="` + strings.Repeat("a", 40) + `@127.0.0.1:1" bridges=` + strings.Repeat("b", 40) + "@127.0.0.1:2"); r[0] != "250 OK" || len(f.Config().Bridges) != 2 {
		t.Errorf("SETCONF two bridges: %q, %q", r, f.Config().Bridges)
	}
	c.event() // its CONF_CHANGED
	if r := c.do("RESETCONF log_level bridges"); r[0] != "250 OK" || f.Config().LogLevel != "warn" || len(f.Config().Bridges) != 0 {
		t.Errorf("RESETCONF: %q, %+v", r, f.Config())
	}
	c.event()
	for cmd, code := range map[string]string{
		"SETCONF log_level=loud":     "553",
		"SETCONF tunnels.hops=2":     "553", // not at run time
		"SETCONF ExitPolicy=reject":  "552",
		"SETCONF":                    "512",
		`SETCONF log_level="debug`:   "512",
		"SETCONF bridges=nonsense@x": "553",
	} {
		if r := c.do(cmd); r[0][:3] != code {
			t.Errorf("%s: %q, want %s", cmd, r, code)
		}
	}
	if f.Config().LogLevel != "warn" {
		t.Errorf("a refused SETCONF changed log_level to %q", f.Config().LogLevel)
	}
	// exit.policy changes at run time on an exit only.
	if r := c.do(`SETCONF exit.policy="accept *:80"`); r[0][:3] != "553" || !strings.Contains(r[0], "none") {
		t.Errorf("exit.policy on a node that is no exit: %q", r)
	}
	f.mu.Lock()
	f.cfg.Roles.Exit = true
	f.mu.Unlock()
	if r := c.do(`SETCONF exit.policy="accept *:80" exit.policy="reject *:*"`); r[0] != "250 OK" || !slices.Equal(f.Config().Exit.Policy, []string{"accept *:80", "reject *:*"}) {
		t.Errorf("SETCONF exit.policy on an exit: %q, %q", r, f.Config().Exit.Policy)
	}
	if ev, _ := c.event(); strings.Join(ev, "|") != "650-CONF_CHANGED|650-exit.policy=accept *:80|650-exit.policy=reject *:*|650 OK" {
		t.Errorf("CONF_CHANGED: %q", ev)
	}
	if r := c.do(`SETCONF exit.policy="accept nonsense"`); r[0][:3] != "553" {
		t.Errorf("a bad exit policy: %q", r)
	}
	// relay_bandwidth_rate changes between two limits only.
	if r := c.do("SETCONF relay_bandwidth_rate=8MB"); r[0][:3] != "553" || !strings.Contains(r[0], "next start") {
		t.Errorf("a limit on a node started without one: %q", r)
	}
	f.mu.Lock()
	f.cfg.RelayBandwidthRate = "8MB"
	f.mu.Unlock()
	if r := c.do("SETCONF relay_bandwidth_rate=4MB relay_bandwidth_burst=2MiB"); r[0] != "250 OK" || f.Config().RelayBandwidthRate != "4MB" || f.Config().RelayBandwidthBurst != "2MiB" {
		t.Errorf("SETCONF relay_bandwidth_rate: %q, %q %q", r, f.Config().RelayBandwidthRate, f.Config().RelayBandwidthBurst)
	}
	c.event()
	for _, cmd := range []string{"SETCONF relay_bandwidth_rate=0", "SETCONF relay_bandwidth_rate=1KB"} {
		if r := c.do(cmd); r[0][:3] != "553" {
			t.Errorf("%s: %q", cmd, r)
		}
	}
}

func TestSignals(t *testing.T) {
	s, f := startServer(t, nil)
	c := dial(t, s)
	c.auth(s)
	c.do("SETEVENTS SIGNAL")
	if r := c.do("SIGNAL NEWNYM"); r[0] != "250 OK" {
		t.Fatalf("NEWNYM: %q", r)
	}
	if ev, _ := c.event(); ev[0] != "650 SIGNAL NEWNYM" {
		t.Errorf("SIGNAL event: %q", ev)
	}
	if r := c.do("SIGNAL HUP"); r[0] != "250 OK" {
		t.Fatalf("HUP: %q", r)
	}
	if ev, _ := c.event(); ev[0] != "650 SIGNAL RELOAD" {
		t.Errorf("SIGNAL event: %q", ev)
	}
	if r := c.do("SIGNAL BOGUS"); r[0] != `552 Unrecognized signal code "BOGUS"` {
		t.Errorf("unknown signal: %q", r)
	}
	f.mu.Lock()
	if f.newnyms != 1 || f.reloads != 1 {
		t.Errorf("newnym %d, reload %d", f.newnyms, f.reloads)
	}
	f.mu.Unlock()
	if r := c.do("SIGNAL HALT"); r[0] != "250 OK" || !c.closed() {
		t.Errorf("HALT: %q", r)
	}
	select {
	case <-f.shutdown:
	case <-time.After(10 * time.Second):
		t.Fatal("HALT did not shut down")
	}
}

func TestEvents(t *testing.T) {
	tee := NewLogTee(slog.DiscardHandler)
	s, f := startServer(t, func(c *Config) { c.LogTee = tee })
	log := slog.New(tee)
	c := dial(t, s)
	c.auth(s)
	c.do("SETEVENTS CIRC STREAM NOTICE WARN ORCONN")
	a, b := proto.NodeID{0xaa}, proto.NodeID{0xbb}
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	s.CircuitEvent(circuits.Event{Kind: circuits.EventLaunched, Circuit: 7, Origin: true, Path: []proto.NodeID{a, b}, At: at})
	s.CircuitEvent(circuits.Event{Kind: circuits.EventJoined, Circuit: 8, At: at}) // not ours: not reported
	s.CircuitEvent(circuits.Event{Kind: circuits.EventBuilt, Circuit: 7, Origin: true, Path: []proto.NodeID{a, b}, Hops: 2, At: at})
	s.StreamEvent(Stream{ID: 3, Status: StreamNew, Circuit: 7, Target: "ordb.veil:0"})
	log.Info("hello", "n", 1, "why", "two words")
	log.Debug("not asked for")
	f.mu.Lock()
	f.links = []Link{{Peer: a, Addr: "127.0.0.1:1"}}
	f.mu.Unlock()
	s.CircuitEvent(circuits.Event{Kind: circuits.EventClosed, Circuit: 7, Origin: true, Path: []proto.NodeID{a, b}, Reason: proto.DestroyFinished, At: at})
	tc := "BUILD_FLAGS=NEED_CAPACITY PURPOSE=GENERAL TIME_CREATED=2026-01-02T03:04:05.000006"
	path := longName(a) + "," + longName(b)
	want := []string{
		"650 CIRC 7 LAUNCHED " + tc,
		"650 CIRC 7 BUILT " + path + " " + tc,
		"650 STREAM 3 NEW 7 ordb.veil:0 PURPOSE=USER",
		`650 NOTICE hello n=1 why="two words"`,
		"650 CIRC 7 CLOSED " + path + " " + tc + " REASON=FINISHED",
	}
	// ORCONN comes from the once-a-second tick, in no set order with the others.
	orconn := "650 ORCONN " + longName(a) + " CONNECTED ID=2852126720"
	var got []string
	sawOR := false
	for len(got) < len(want) || !sawOR {
		r, err := c.event()
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		if r[0] == orconn {
			sawOR = true
			continue
		}
		got = append(got, r...)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if r := c.do("GETINFO circuit-status stream-status"); strings.Join(r, "|") != "250-circuit-status=|250+stream-status=|  3 NEW 7 ordb.veil:0|250 OK" {
		t.Errorf("status after close: %q", r)
	}
}

// Malformed input gets a 5xx answer, an over-long line closes the
// connection, and a "+" command's data block is skipped.
func TestMalformed(t *testing.T) {
	s, _ := startServer(t, nil)
	c := dial(t, s)
	c.auth(s)
	for cmd, code := range map[string]string{
		"G3TINFO x":              "500",
		"GETINFO \"unterminated": "512",
		"GETINFO a=b":            "512",
		"NOSUCHCOMMAND":          "510",
		"GETINFO x\x01y":         "500",
		"SIGNAL":                 "512",
		"USEFEATURE NOSUCH":      "552",
		"SAVECONF NOW":           "512",
		"LOADCONF":               "551",
	} {
		if r := c.do(cmd); r[0][:3] != code {
			t.Errorf("%q: %q, want %s", cmd, r, code)
		}
	}
	io.WriteString(c.c, "+LOADCONF\r\nline\r\n..dotted\r\n.\r\n")
	if r, _ := c.readReply(); r[0][:3] != "510" {
		t.Errorf("+LOADCONF: %q", r)
	}
	if r := c.do("GETINFO version"); r[0] != "250-version="+TorVersion {
		t.Errorf("after a data block: %q", r)
	}
	io.WriteString(c.c, "GETINFO "+strings.Repeat("x", MaxLineLen)+"\r\n")
	if r, _ := c.readReply(); len(r) == 0 || r[0] != "500 Line too long" || !c.closed() {
		t.Errorf("long line: %q", r)
	}
}

func TestReplyEscaping(t *testing.T) {
	var r reply
	r.addValue(codeOK, "k", "one\n.two\n")
	r.addValue(codeOK, "q", "x")
	r.add(codeOK, "OK")
	want := "250+k=\r\none\r\n..two\r\n.\r\n250-q=x\r\n250 OK\r\n"
	if got := string(r.appendTo(nil)); got != want {
		t.Fatalf("%q\nwant %q", got, want)
	}
	for in, want := range map[string]string{`a"b\c` + "\n\x01": `"a\"b\\c\n\001"`, "": `""`} {
		if q := Quote(in); q != want {
			t.Errorf("Quote(%q) = %s, want %s", in, q, want)
		}
		if as, err := ParseArgs(Quote(in)); err != nil || as[0].Value != in {
			t.Errorf("ParseArgs(Quote(%q)) = %+v %v", in, as, err)
		}
	}
}

// TAKEOWNERSHIP ties the node to the connection: closing it (or QUIT)
// stops the node; DROPOWNERSHIP unties it; other connections never stop
// it; a port closing with the node does not call Shutdown again.
func TestTakeOwnership(t *testing.T) {
	stopped := func(f *fakeNode) bool {
		select {
		case <-f.shutdown:
			return true
		case <-time.After(2 * time.Second):
			return false
		}
	}
	s, f := startServer(t, nil)

	plain := dial(t, s)
	plain.auth(s)
	plain.c.Close()
	dropped := dial(t, s)
	dropped.auth(s)
	for _, cmd := range []string{"TAKEOWNERSHIP", "DROPOWNERSHIP"} {
		if r := dropped.do(cmd); r[0] != "250 OK" {
			t.Fatalf("%s: %q", cmd, r)
		}
	}
	dropped.do("QUIT")

	owner := dial(t, s)
	owner.auth(s)
	if r := owner.do("TAKEOWNERSHIP"); r[0] != "250 OK" {
		t.Fatalf("TAKEOWNERSHIP: %q", r)
	}
	select {
	case <-f.shutdown:
		t.Fatal("the node stopped while its owner was connected (or for another connection)")
	default:
	}
	owner.c.Close()
	if !stopped(f) {
		t.Fatal("the owner's connection closed and the node kept running")
	}

	// An owner that quits stops the node too; the port closing does not.
	s2, f2 := startServer(t, nil)
	q := dial(t, s2)
	q.auth(s2)
	q.do("TAKEOWNERSHIP")
	q.do("QUIT")
	if !stopped(f2) {
		t.Fatal("the owner quit and the node kept running")
	}
	s3, f3 := startServer(t, nil)
	o3 := dial(t, s3)
	o3.auth(s3)
	o3.do("TAKEOWNERSHIP")
	s3.Close()
	select {
	case <-f3.shutdown:
		t.Fatal("closing the port (the node stopping) called Shutdown")
	default:
	}
}

// SAVECONF writes the running configuration over the file, whole, so
// that it loads back the same; a file it cannot write is a 551.
func TestSaveConf(t *testing.T) {
	s, f := startServer(t, nil)
	os.WriteFile(f.file, []byte("# hand-written\nlog_level = \"error\"\n"), 0o600)
	c := dial(t, s)
	c.auth(s)
	if r := c.do("SETCONF log_level=debug bridges=" + strings.Repeat("a", 40) + "@127.0.0.1:1"); r[0] != "250 OK" {
		t.Fatalf("SETCONF: %q", r)
	}
	for _, cmd := range []string{"SAVECONF", "SAVECONF FORCE"} {
		if r := c.do(cmd); r[0] != "250 OK" {
			t.Fatalf("%s: %q", cmd, r)
		}
		got, err := config.Load(f.file, false)
		if err != nil {
			t.Fatalf("the saved file does not load: %v", err)
		}
		if want := f.Config(); got.LogLevel != "debug" || !slices.Equal(got.Bridges, want.Bridges) || got.DataDir != want.DataDir {
			t.Fatalf("%s saved %+v, running %+v", cmd, got, want)
		}
	}
	f.mu.Lock()
	f.file = filepath.Join(f.file, "not-a-dir", "veil.toml")
	f.mu.Unlock()
	if r := c.do("SAVECONF"); r[0][:3] != "551" || !strings.Contains(r[0], "Unable to write") {
		t.Fatalf("SAVECONF to an impossible path: %q", r)
	}
}

// stem takes ownership as launch_tor's controllers do: TAKEOWNERSHIP,
// then RESETCONF __OwningControllerProcess; closing stem's controller
// stops the node. Setting a process to watch is refused.
func TestStemTakeOwnership(t *testing.T) {
	if err := exec.Command("/usr/bin/python3", "-c", "import stem.control").Run(); err != nil {
		t.Skip("needs /usr/bin/python3 and python3-stem (Debian packages python3, python3-stem)")
	}
	s, f := startServer(t, nil)
	_, port, _ := net.SplitHostPort(s.Addr())
	script := `
import sys
from stem.control import Controller
c = Controller.from_port(port=int(sys.argv[1]))
c.authenticate()
assert c.msg('TAKEOWNERSHIP').is_ok()
c.reset_conf('__OwningControllerProcess')
try:
    c.set_conf('__OwningControllerProcess', '1')
    print('set_conf accepted')
except Exception as e:
    print('refused:', e)
c.close()
`
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "/usr/bin/python3", "-c", script, port).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "refused:") || !strings.Contains(string(out), "TAKEOWNERSHIP") {
		t.Fatalf("stem: %v\n%s", err, out)
	}
	select {
	case <-f.shutdown:
	case <-time.After(5 * time.Second):
		t.Fatal("stem closed its owning controller and the node kept running")
	}
}
