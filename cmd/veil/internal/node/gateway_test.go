package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"veil/cmd/veil/internal/gateway"
	"veil/proto"
)

// startNetwork starts a bridge and size-1 nodes joining through it, in
// this process on 127.0.0.1, and waits until their directories are full
// enough for paths.
func startNetwork(t *testing.T, ctx context.Context, size int) []*Node {
	t.Helper()
	bc := testConfig(t, t.TempDir())
	bc.Roles.Bridge = true
	bridge := startTest(t, ctx, bc)
	nodes := []*Node{bridge}
	for range size - 1 {
		nodes = append(nodes, startTest(t, ctx, testConfig(t, t.TempDir(), bridge.BridgeLine())))
	}
	for _, n := range nodes {
		waitFor(t, within(ctx, 30*time.Second), "directories", func() bool { return n.dir.Len() >= len(nodes)-2 })
	}
	return nodes
}

// contentURL is the gateway URL of name at n, with its token.
func contentURL(n *Node, name string) string {
	return "http://" + n.APIAddr() + gateway.ContentPrefix + name + "?k=" + gateway.Token(n.api.cookie, name)
}

// transferOf is n's transfer of name, if one runs.
func transferOf(n *Node, name proto.HashName) (TransferStatus, bool) {
	for _, tr := range n.Status(context.Background()).Transfers {
		if tr.HashName == name.String() {
			return tr, true
		}
	}
	return TransferStatus{}, false
}

func rangeGet(t *testing.T, url, rng string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading %s %s: %v", url, rng, err)
	}
	return resp, b
}

// The gateway over a network of nodes: a content published at one node
// is served at another by Range requests while its download runs; a
// range near the end comes before the download gets there on its own.
func TestGatewayNetwork(t *testing.T) {
	checkLeaks(t)
	defer func(d time.Duration) { gatewayLookupTimeout = d }(gatewayLookupTimeout)
	gatewayLookupTimeout = 6 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes := startNetwork(t, ctx, 7)
	size := int64(24<<20 + 123)
	if underRace {
		size = 6<<20 + 123 // the race detector slows the download down as much
	}
	data := make([]byte, size)
	rand.Read(data)
	pub, err := nodes[1].Publish(ctx, "video/mp4", bytes.NewReader(data))
	if err != nil || pub.Advertised == 0 {
		t.Fatalf("publish: %+v %v", pub, err)
	}
	getter := nodes[len(nodes)-1]
	url := contentURL(getter, pub.Name.String())

	// The first request, at 90 %, starts the fetch and moves it there:
	// its bytes arrive while most of the content is still missing.
	at := int64(size) * 9 / 10
	t0 := time.Now()
	resp, body := rangeGet(t, url, fmt.Sprintf("bytes=%d-%d", at, at+65535))
	took := time.Since(t0)
	tr, running := transferOf(getter, pub.Name)
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[at:at+65536]) {
		t.Fatalf("range at 90%%: %d, %d bytes", resp.StatusCode, len(body))
	}
	if !running || tr.Held*2 > tr.Total {
		t.Fatalf("range at 90%% served after %v with the download at %d of %d chunks (running %v): the seek did not come first", took, tr.Held, tr.Total, running)
	}
	t.Logf("range at 90%% in %v, download at %d/%d chunks", took, tr.Held, tr.Total)
	if got, want := resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-%d/%d", at, at+65535, size); got != want {
		t.Fatalf("Content-Range %q, want %q", got, want)
	}

	// A second seek, to the middle, while the download runs from 90 %:
	// its bytes come before the download got there.
	mid := int64(size) / 2
	t0 = time.Now()
	resp, body = rangeGet(t, url, fmt.Sprintf("bytes=%d-%d", mid, mid+65535))
	took = time.Since(t0)
	tr, running = transferOf(getter, pub.Name)
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[mid:mid+65536]) {
		t.Fatalf("range at 50%%: %d, %d bytes", resp.StatusCode, len(body))
	}
	if !running || tr.Held*10 > tr.Total*6 {
		t.Fatalf("range at 50%% served after %v with the download at %d of %d chunks (running %v)", took, tr.Held, tr.Total, running)
	}
	t.Logf("seek to 50%% in %v, download at %d/%d chunks", took, tr.Held, tr.Total)

	// Concurrent requests share the one fetch.
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			off := int64(size) * int64(2+i) / 10
			resp, body := rangeGet(t, url, fmt.Sprintf("bytes=%d-%d", off, off+999))
			if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[off:off+1000]) {
				t.Errorf("concurrent range at %d: %d, %d bytes", off, resp.StatusCode, len(body))
			}
		})
	}
	wg.Wait()
	getter.streams.mu.Lock()
	shared := len(getter.streams.m)
	getter.streams.mu.Unlock()
	if shared > 1 {
		t.Fatalf("%d fetches for one content", shared)
	}

	// Ranges of every shape (RFC 9110 14.1.2).
	for _, tt := range []struct {
		rng        string
		code       int
		start, end int64 // the bytes expected, [start, end)
	}{
		{"", 200, 0, size},
		{"bytes=0-0", 206, 0, 1},
		{"bytes=100-5099", 206, 100, 5100},
		{"bytes=-1000", 206, size - 1000, size},
		{"bytes=-999999999", 206, 0, size}, // a suffix longer than the content: all of it
		{fmt.Sprintf("bytes=%d-", size-4321), 206, size - 4321, size},
		{fmt.Sprintf("bytes=%d-%d", size-10, size+1000), 206, size - 10, size}, // clamped
		{"bytes=0-1,5-9", 200, 0, size},                                        // several ranges: ignored
		{"items=0-9", 200, 0, size},                                            // another unit: ignored
	} {
		resp, body := rangeGet(t, url, tt.rng)
		if resp.StatusCode != tt.code || !bytes.Equal(body, data[tt.start:tt.end]) {
			t.Errorf("Range %q: %d, %d bytes; want %d, %d bytes", tt.rng, resp.StatusCode, len(body), tt.code, tt.end-tt.start)
			continue
		}
		if cl := resp.Header.Get("Content-Length"); cl != strconv.FormatInt(tt.end-tt.start, 10) {
			t.Errorf("Range %q: Content-Length %q", tt.rng, cl)
		}
		if tt.code == 206 {
			if got, want := resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-%d/%d", tt.start, tt.end-1, size); got != want {
				t.Errorf("Range %q: Content-Range %q, want %q", tt.rng, got, want)
			}
		}
		if resp.Header.Get("Accept-Ranges") != "bytes" || resp.Header.Get("Content-Type") != "video/mp4" {
			t.Errorf("Range %q: headers %v", tt.rng, resp.Header)
		}
	}
	// Unsatisfiable ranges: 416 with the size.
	for _, rng := range []string{fmt.Sprintf("bytes=%d-", size), fmt.Sprintf("bytes=%d-%d", size+5, size+9), "bytes=-0"} {
		resp, _ := rangeGet(t, url, rng)
		if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes */%d", size) {
			t.Errorf("Range %q: %d, Content-Range %q", rng, resp.StatusCode, resp.Header.Get("Content-Range"))
		}
	}
	// HEAD: the headers of a GET, no body.
	resp, err = http.Head(url)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != size || len(b) != 0 || resp.Header.Get("Accept-Ranges") != "bytes" || resp.Header.Get("Content-Type") != "video/mp4" {
		t.Fatalf("HEAD: %d, length %d, body %d, headers %v", resp.StatusCode, resp.ContentLength, len(b), resp.Header)
	}

	// A bad hash_name: 400. An unknown one: 404 once the lookup failed,
	// within the gateway's bound.
	req, _ := http.NewRequest(http.MethodGet, "http://"+getter.APIAddr()+"/content/xyz", nil)
	req.Header.Set(CookieHeader, getter.api.cookie)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad hash_name: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	unknown := strings.Repeat("ab", 20)
	t0 = time.Now()
	resp, _ = rangeGet(t, contentURL(getter, unknown), "")
	if took := time.Since(t0); resp.StatusCode != http.StatusNotFound || took > gatewayLookupTimeout+5*time.Second {
		t.Fatalf("unknown hash_name: %d after %v", resp.StatusCode, took)
	}
	// The buffering report sees the content whole once the fetch ended.
	c, err := Dial(ctx, getter.dataDir, "")
	if err != nil {
		t.Fatal(err)
	}
	var last StreamEvent
	if err := c.Stream(ctx, pub.Name.String(), func(ev StreamEvent) bool { last = ev; return true }); err != nil {
		t.Fatal(err)
	}
	if !last.Done || last.Held != last.Total || last.URL != url || last.Size != size {
		t.Fatalf("last stream event %+v", last)
	}
}
