package socks

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

const curlPath = "/usr/bin/curl"

func needCurl(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(curlPath); err != nil {
		t.Skip("needs curl (apt package curl)")
	}
}

// curl runs curl with args and returns its stdout, stderr and exit code.
func curl(t *testing.T, args ...string) ([]byte, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, curlPath, append([]string{"-sS", "--noproxy", "", "--max-time", "20"}, args...)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"} // no proxy variables from the environment
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), errb.String(), code
}

type fixture struct {
	srv     *Server
	addr    string
	content []byte
	hash    string
	origin  string // a local HTTP server's host:port
	file    []byte

	mu    sync.Mutex
	dials []Request
	fail  error
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{hash: "0123456789abcdef0123456789abcdef01234567", content: make([]byte, 300_001), file: make([]byte, 200_003)}
	rand.Read(f.content)
	rand.Read(f.file)
	origin := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(f.file) })}
	oln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go origin.Serve(oln)
	t.Cleanup(func() { origin.Close() })
	f.origin = oln.Addr().String()

	content := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != f.hash+".veil" || r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Write(f.content)
	})
	cfg := DefaultConfig()
	cfg.Content = content
	cfg.Dial = func(ctx context.Context, req Request) (net.Conn, error) {
		f.mu.Lock()
		f.dials = append(f.dials, req)
		fail := f.fail
		f.mu.Unlock()
		if fail != nil {
			return nil, fail
		}
		host := req.Host
		if host == "localhost" {
			host = "127.0.0.1" // the test's own stand-in for an exit's resolver
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", net.JoinHostPort(host, fmt.Sprint(req.Port)))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.srv = New(ln, cfg)
	go f.srv.Serve()
	t.Cleanup(func() { f.srv.Close() })
	f.addr = ln.Addr().String()
	return f
}

// noLeaks fails t if goroutines started during it outlive its cleanups
// (waiting a bounded time for closed connections' goroutines to end).
func noLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		for i := 0; i < 100 && runtime.NumGoroutine() > before; i++ {
			time.Sleep(20 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<20)
			t.Errorf("%d goroutines leaked:\n%s", n-before, buf[:runtime.Stack(buf, true)])
		}
	})
}

func TestCurlVeilHost(t *testing.T) {
	needCurl(t)
	noLeaks(t)
	f := newFixture(t)
	for _, proxy := range []string{"--socks5-hostname", "--socks4a"} {
		got, stderr, code := curl(t, proxy, f.addr, "http://"+f.hash+".veil/")
		if code != 0 || !bytes.Equal(got, f.content) {
			t.Fatalf("%s: exit %d, %d bytes (want %d): %s", proxy, code, len(got), len(f.content), stderr)
		}
	}
	// Not a hash_name: host unreachable (curl's SOCKS5 error names code 4).
	_, stderr, code := curl(t, "--socks5-hostname", f.addr, "http://nothing.veil/")
	if code != 97 || !strings.Contains(stderr, "(4)") {
		t.Fatalf("bad .veil name: exit %d, %q", code, stderr)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.dials) != 0 {
		t.Fatalf(".veil hosts were dialled: %+v", f.dials)
	}
}

func TestCurlDialAndReplies(t *testing.T) {
	needCurl(t)
	noLeaks(t)
	f := newFixture(t)
	_, port, _ := net.SplitHostPort(f.origin)
	for _, tc := range []struct{ proxy, host string }{
		{"--socks5-hostname", "localhost"}, {"--socks5-hostname", "127.0.0.1"}, {"--socks4a", "localhost"}, {"--socks5-hostname", "[::ffff:127.0.0.1]"},
	} {
		got, stderr, code := curl(t, tc.proxy, f.addr, "http://"+tc.host+":"+port+"/file")
		if code != 0 || !bytes.Equal(got, f.file) {
			t.Fatalf("%s %s: exit %d, %d bytes: %s", tc.proxy, tc.host, code, len(got), stderr)
		}
	}
	f.mu.Lock()
	if f.dials[0].Host != "localhost" || f.dials[2].Host != "localhost" {
		t.Fatalf("the name was not passed on as given (no client-side DNS): %+v", f.dials)
	}
	f.mu.Unlock()

	// Each failure gives its reply code, which curl reports.
	for _, tc := range []struct {
		err  error
		code byte
	}{
		{fmt.Errorf("exit said: %w", ErrNotAllowed), ReplyNotAllowed},
		{ErrNetworkUnreachable, ReplyNetworkUnreachable},
		{ErrHostUnreachable, ReplyHostUnreachable},
		{ErrConnectionRefused, ReplyConnectionRefused},
		{context.DeadlineExceeded, ReplyTTLExpired},
		{fmt.Errorf("anything else"), ReplyGeneralFailure},
	} {
		f.mu.Lock()
		f.fail = tc.err
		f.mu.Unlock()
		_, stderr, code := curl(t, "--socks5-hostname", f.addr, "http://example.invalid:"+port+"/")
		if want := fmt.Sprintf("(%d)", tc.code); code != 97 || !strings.Contains(stderr, want) {
			t.Errorf("%v: curl exit %d %q, want 97 and %s", tc.err, code, stderr, want)
		}
		_, stderr, code = curl(t, "--socks4a", f.addr, "http://example.invalid:"+port+"/")
		if code != 97 {
			t.Errorf("%v over SOCKS4a: curl exit %d %q, want 97", tc.err, code, stderr)
		}
	}
}

// Usernames and passwords reach Dial as distinct isolation keys.
func TestCurlIsolationKeys(t *testing.T) {
	needCurl(t)
	f := newFixture(t)
	url := "http://" + f.origin + "/"
	for _, up := range []string{"alice:one", "bob:two", "alice:one"} {
		if _, stderr, code := curl(t, "--socks5-hostname", f.addr, "--proxy-user", up, url); code != 0 {
			t.Fatalf("%s: exit %d %s", up, code, stderr)
		}
	}
	if _, stderr, code := curl(t, "--socks5-hostname", f.addr, url); code != 0 {
		t.Fatalf("no credentials: exit %d %s", code, stderr)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k := func(i int) string { return f.dials[i].IsolationKey() }
	if k(0) == k(1) || k(0) != k(2) || k(3) == k(0) || k(3) == k(1) {
		t.Fatalf("isolation keys %q %q %q %q", k(0), k(1), k(2), k(3))
	}
	if f.dials[0].User != "alice" || f.dials[0].Password != "one" {
		t.Fatalf("credentials %+v", f.dials[0])
	}
}

// A client that never finishes its handshake is dropped after
// HandshakeTimeout.
func TestHandshakeTimeout(t *testing.T) {
	cfg := DefaultConfig()
	cfg.HandshakeTimeout = 200 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(ln, cfg)
	go s.Serve()
	defer s.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{5, 1}) // and nothing more
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 8)
	n, err := c.Read(buf)
	if err == nil {
		t.Fatalf("read %d bytes, want the server to close", n)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the server kept a stalled handshake open")
	}
}
