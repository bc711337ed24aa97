package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"veil/proto"
)

// memContent is a content in memory whose bytes arrive as the test
// releases them (held), like a download in progress.
type memContent struct {
	mime string
	live bool
	data []byte

	mu    sync.Mutex
	held  int           // bytes readable
	more  chan struct{} // closed and replaced when held grows
	wants []int64
}

func newMem(data []byte, held int) *memContent {
	return &memContent{mime: "video/mp4", data: data, held: held, more: make(chan struct{})}
}

func (m *memContent) grow(held int) {
	m.mu.Lock()
	m.held = held
	close(m.more)
	m.more = make(chan struct{})
	m.mu.Unlock()
}

func (m *memContent) Size() int64 {
	if m.live {
		return -1
	}
	return int64(len(m.data))
}
func (m *memContent) MIME() string { return m.mime }
func (m *memContent) Want(off int64) {
	m.mu.Lock()
	m.wants = append(m.wants, off)
	m.mu.Unlock()
}
func (m *memContent) NewReader(ctx context.Context) (io.ReadSeeker, error) {
	return &memReader{m: m, ctx: ctx}, nil
}

type memReader struct {
	m   *memContent
	ctx context.Context
	off int64
}

func (r *memReader) Read(p []byte) (int, error) {
	for {
		r.m.mu.Lock()
		held, more := r.m.held, r.m.more
		r.m.mu.Unlock()
		if !r.m.live && r.off >= int64(len(r.m.data)) {
			return 0, io.EOF
		}
		if r.off < int64(held) {
			n := copy(p[:min(len(p), proto.ChunkSize)], r.m.data[r.off:held])
			r.off += int64(n)
			return n, nil
		}
		select {
		case <-more:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

func (r *memReader) Seek(off int64, whence int) (int64, error) {
	if whence != io.SeekStart {
		return r.off, errors.New("memReader: SeekStart only")
	}
	r.off = off
	return off, nil
}

// memSource serves contents by name; others are not found.
type memSource map[proto.HashName]*memContent

func (s memSource) Content(ctx context.Context, name proto.HashName) (Content, error) {
	if c, ok := s[name]; ok {
		return c, nil
	}
	<-ctx.Done() // the lookup runs until the gateway's bound
	return nil, ctx.Err()
}

const testCookie = "0123456789abcdef"

func serve(t *testing.T, src Source) (*Handler, string) {
	t.Helper()
	h := New(Config{Source: src, LookupTimeout: 300 * time.Millisecond})
	mux := http.NewServeMux()
	mux.Handle("GET "+ContentPrefix+"{hash}", h)
	mux.HandleFunc("/api/v1/status", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "status") })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "page") })
	srv := httptest.NewServer(Guard{Cookie: testCookie, Header: "X-Veil-Cookie"}.Wrap(mux))
	t.Cleanup(srv.Close)
	return h, srv.URL
}

var (
	nameA = proto.HashName{0xaa, 1}
	nameB = proto.HashName{0xbb, 2}
)

func do(t *testing.T, method, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// Each defence of the HTTP server, with Go's HTTP client: a forged Host
// (DNS rebinding), another site's Origin or Sec-Fetch-Site, a missing
// cookie or token are refused; the right ones are served; no answer
// carries a CORS header.
func TestGuard(t *testing.T) {
	data := []byte(strings.Repeat("veil", 1000))
	_, base := serve(t, memSource{nameA: newMem(data, len(data)), nameB: newMem(data, len(data))})
	port := base[strings.LastIndex(base, ":")+1:]
	contentA := base + ContentPrefix + nameA.String()
	withToken := contentA + "?k=" + Token(testCookie, nameA.String())
	cookie := map[string]string{"X-Veil-Cookie": testCookie}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	for _, tt := range []struct {
		what   string
		method string
		url    string
		hdr    map[string]string
		code   int
	}{
		{"content with its token", "GET", withToken, nil, 200},
		{"content with the cookie", "GET", contentA, cookie, 200},
		{"content HEAD with its token", "HEAD", withToken, nil, 200},
		{"content, no token", "GET", contentA, nil, 401},
		{"content, wrong token", "GET", contentA + "?k=" + strings.Repeat("0", 32), nil, 401},
		{"content, another content's token", "GET", contentA + "?k=" + Token(testCookie, nameB.String()), nil, 401},
		{"content, token of another cookie", "GET", contentA + "?k=" + Token("other", nameA.String()), nil, 401},
		{"api with the cookie", "GET", base + "/api/v1/status", cookie, 200},
		{"api without the cookie", "GET", base + "/api/v1/status", nil, 401},
		{"api with a content token", "GET", base + "/api/v1/status?k=" + Token(testCookie, nameA.String()), nil, 401},
		{"api, wrong cookie", "GET", base + "/api/v1/status", map[string]string{"X-Veil-Cookie": "nope"}, 401},
		{"a POST without the cookie", "POST", base + "/", nil, 401},
		{"a CORS preflight", "OPTIONS", withToken, map[string]string{"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}, 403},
		{"a page read", "GET", base + "/", nil, 200},
		{"Host localhost", "GET", withToken, map[string]string{"Host": "localhost:" + port}, 200},
		{"Host [::1]", "GET", withToken, map[string]string{"Host": "[::1]:" + port}, 200},
		{"Host 127.0.0.2", "GET", withToken, map[string]string{"Host": "127.0.0.2:" + port}, 200},
		{"Host rebound name", "GET", withToken, map[string]string{"Host": "evil.example:" + port}, 403},
		{"Host rebound name, cookie", "GET", base + "/api/v1/status", with(map[string]string{"Host": "evil.example:" + port, "X-Veil-Cookie": testCookie}), 403},
		{"Host localhost.evil", "GET", withToken, map[string]string{"Host": "localhost.evil.example"}, 403},
		{"Host LAN address", "GET", withToken, map[string]string{"Host": "192.168.1.2:" + port}, 403},
		{"Origin another site", "GET", withToken, map[string]string{"Origin": "http://evil.example"}, 403},
		{"Origin null", "GET", withToken, map[string]string{"Origin": "null"}, 403},
		{"Origin another local port", "GET", withToken, map[string]string{"Origin": "http://127.0.0.1:1"}, 403},
		{"Origin itself", "GET", withToken, map[string]string{"Origin": base}, 200},
		{"Sec-Fetch-Site cross-site (<video src> on a web page)", "GET", withToken, map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"Sec-Fetch-Site same-site (another local server's page)", "GET", withToken, map[string]string{"Sec-Fetch-Site": "same-site"}, 403},
		{"Sec-Fetch-Site cross-site with the cookie", "GET", base + "/api/v1/status", with(map[string]string{"Sec-Fetch-Site": "cross-site", "X-Veil-Cookie": testCookie}), 403},
		{"Sec-Fetch-Site none (typed in the address bar)", "GET", withToken, map[string]string{"Sec-Fetch-Site": "none"}, 200},
		{"Sec-Fetch-Site same-origin", "GET", withToken, map[string]string{"Sec-Fetch-Site": "same-origin"}, 200},
	} {
		resp, body := do(t, tt.method, tt.url, tt.hdr)
		if resp.StatusCode != tt.code {
			t.Errorf("%s: %d %s, want %d", tt.what, resp.StatusCode, body, tt.code)
		}
		for k := range resp.Header {
			if strings.HasPrefix(k, "Access-Control-") {
				t.Errorf("%s: CORS header %s: %v", tt.what, k, resp.Header[k])
			}
		}
		if tt.code == 200 && strings.Contains(tt.url, ContentPrefix) && tt.method == "GET" && body != string(data) {
			t.Errorf("%s: body of %d bytes", tt.what, len(body))
		}
	}
	// A content's answer cannot run as a page of this origin.
	resp, _ := do(t, "GET", withToken, nil)
	if resp.Header.Get("Content-Security-Policy") != "sandbox" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("content headers %v", resp.Header)
	}
}

func TestLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "LOCALHOST:7780": true, "127.0.0.1": true, "127.0.0.1:7780": true, "127.9.9.9:1": true,
		"[::1]:7780": true, "[::1]": true, "::1": true, "[::ffff:127.0.0.1]:80": true,
		"": false, "localhost.": false, "evil.example": false, "127.0.0.1.evil.example": false, "0.0.0.0:7780": false,
		"[::]:7780": false, "10.0.0.1": false, "[fe80::1%lo]:80": false, "2130706433": false,
	} {
		if got := LoopbackHost(host); got != want {
			t.Errorf("LoopbackHost(%q) = %v", host, got)
		}
	}
}

// A range far ahead of the download: Want hears its offset before the
// reader waits, and the range's first bytes go out as soon as they are
// held, without waiting for the range's end.
func TestRangeWhileDownloading(t *testing.T) {
	data := make([]byte, 100_000)
	for i := range data {
		data[i] = byte(i * 31)
	}
	m := newMem(data, 1000)
	_, base := serve(t, memSource{nameA: m})
	req, _ := http.NewRequest("GET", base+ContentPrefix+nameA.String()+"?k="+Token(testCookie, nameA.String()), nil)
	req.Header.Set("Range", "bytes=90000-")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 206 || resp.ContentLength != 10_000 {
		t.Fatalf("%d, length %d", resp.StatusCode, resp.ContentLength)
	}
	m.mu.Lock()
	wants := append([]int64(nil), m.wants...)
	m.mu.Unlock()
	if len(wants) != 1 || wants[0] != 90_000 {
		t.Fatalf("Want calls %v, want [90000]", wants)
	}
	// Only the first chunk of the range arrives: it reaches the client.
	m.grow(90_000 + proto.ChunkSize)
	first := make([]byte, proto.ChunkSize)
	if _, err := io.ReadFull(resp.Body, first); err != nil || !bytes.Equal(first, data[90_000:90_000+proto.ChunkSize]) {
		t.Fatalf("first chunk: %v", err)
	}
	m.grow(len(data))
	rest, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(rest, data[90_000+proto.ChunkSize:]) {
		t.Fatalf("rest: %d bytes, %v", len(rest), err)
	}
}

// 404 for a content nobody provides, once the lookup bound passed; 400
// for a bad hash_name; 405 for other methods.
func TestNotFoundAndBadName(t *testing.T) {
	_, base := serve(t, memSource{})
	unknown := nameB.String()
	t0 := time.Now()
	resp, _ := do(t, "GET", base+ContentPrefix+unknown+"?k="+Token(testCookie, unknown), nil)
	if resp.StatusCode != 404 || time.Since(t0) > 5*time.Second {
		t.Fatalf("unknown: %d after %v", resp.StatusCode, time.Since(t0))
	}
	cookie := map[string]string{"X-Veil-Cookie": testCookie}
	for _, bad := range []string{"xyz", strings.Repeat("a", 39), strings.Repeat("g", 40), strings.Repeat("a", 42)} {
		if resp, _ := do(t, "GET", base+ContentPrefix+bad, cookie); resp.StatusCode != 400 {
			t.Errorf("bad hash_name %q: %d", bad, resp.StatusCode)
		}
	}
}

// A live stream is one growing response: chunked, without a length, its
// bytes reaching the client as they come.
func TestLive(t *testing.T) {
	m := newMem(bytes.Repeat([]byte("live"), 10_000), 1000)
	m.live = true
	m.mime = "video/mp2t"
	_, base := serve(t, memSource{nameA: m})
	// A raw connection, to see the chunked framing.
	addr := strings.TrimPrefix(base, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET "+ContentPrefix+nameA.String()+"?k="+Token(testCookie, nameA.String())+" HTTP/1.1\r\nHost: "+addr+"\r\nRange: bytes=0-9\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.ContentLength != -1 || len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" ||
		resp.Header.Get("Accept-Ranges") != "none" || resp.Header.Get("Content-Type") != "video/mp2t" {
		t.Fatalf("live answer: %d length %d %v %v", resp.StatusCode, resp.ContentLength, resp.TransferEncoding, resp.Header)
	}
	got := make([]byte, 1000)
	if _, err := io.ReadFull(resp.Body, got); err != nil || !bytes.Equal(got, m.data[:1000]) {
		t.Fatalf("first bytes: %v", err)
	}
	m.grow(3000)
	got = make([]byte, 2000)
	if _, err := io.ReadFull(resp.Body, got); err != nil || !bytes.Equal(got, m.data[1000:3000]) {
		t.Fatalf("bytes that came later: %v", err)
	}
}
