package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"veil/cmd/veil/internal/config"
	"veil/proto"
)

// testConfig is a node on 127.0.0.1 with free ports.
func testConfig(t testing.TB, dir string, bridges ...string) config.Config {
	t.Helper()
	c := config.Default()
	c.Listen, c.HTTP, c.DataDir, c.AllowPrivate = "127.0.0.1:0", "127.0.0.1:0", dir, true
	c.Control.Listen = "127.0.0.1:0"
	c.SOCKS = "127.0.0.1:0"
	c.Bridges = bridges
	c.Tunnels.MinCircuits, c.Tunnels.MaxCircuits = 2, 2
	return c
}

func startTest(t testing.TB, ctx context.Context, c config.Config) *Node {
	t.Helper()
	n, err := Start(Options{Config: c})
	if err != nil {
		t.Fatal(err)
	}
	go n.Run(ctx)
	t.Cleanup(func() { n.Close() })
	return n
}

// waitFor polls cond for at most d.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// watchdog ends the test binary with every goroutine's stack if t, its
// cleanups included (the nodes' Close), has not ended within d: a hang
// then says where it hangs, instead of running on until the binary's
// -timeout or an outside kill that leaves no stack. Call it first, so
// that its cleanup runs last.
func watchdog(t *testing.T, d time.Duration) {
	if underRace {
		d *= 3 // everything runs slower
	}
	tm := time.AfterFunc(d, func() {
		buf := make([]byte, 16<<20)
		buf = buf[:runtime.Stack(buf, true)]
		fmt.Fprintf(os.Stderr, "%s did not end within %v (cleanups included); every goroutine:\n%s\n", t.Name(), d, buf)
		os.Exit(2)
	})
	t.Cleanup(func() { tm.Stop() })
}

// within is d, or less if ctx ends sooner: a wait of a test that can do
// nothing once ctx ended.
func within(ctx context.Context, d time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return min(d, time.Until(dl))
	}
	return d
}

// checkLeaks fails t if goroutines started during it outlive it (closing
// TCP connections takes a moment: the wait is bounded). It starts a
// 4-minute watchdog too (the tests using it bound their work at 2).
func checkLeaks(t *testing.T) {
	watchdog(t, 4*time.Minute)
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		http.DefaultClient.CloseIdleConnections()
		for i := 0; i < 100 && runtime.NumGoroutine() > before; i++ {
			time.Sleep(50 * time.Millisecond)
		}
		if g := runtime.NumGoroutine(); g > before {
			buf := make([]byte, 1<<20)
			t.Errorf("%d goroutines leaked:\n%s", g-before, buf[:runtime.Stack(buf, true)])
		}
	})
}

// Nodes in one process: a bridge, relays/ORDBs joining through it, a
// content published at one and fetched at another through a circuit.
func TestNodesPublishFetch(t *testing.T) {
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bc := testConfig(t, t.TempDir())
	bc.Roles.Bridge = true
	bridge := startTest(t, ctx, bc)
	nodes := []*Node{bridge}
	for range 6 {
		nodes = append(nodes, startTest(t, ctx, testConfig(t, t.TempDir(), bridge.BridgeLine())))
	}
	for i, n := range nodes {
		waitFor(t, within(ctx, 30*time.Second), "directories", func() bool { return n.dir.Len() >= len(nodes)-2 })
		t.Logf("node %d: directory %d", i, n.dir.Len())
	}
	data := make([]byte, 200_001)
	rand.Read(data)
	pub, err := nodes[1].Publish(ctx, "application/octet-stream", bytes.NewReader(data))
	if err != nil || pub.Advertised == 0 {
		t.Fatalf("publish: %+v %v", pub, err)
	}
	getter := nodes[len(nodes)-1]
	var last Progress
	if _, err := getter.Fetch(ctx, pub.Name, func(p Progress) { last = p }); err != nil {
		t.Fatal(err)
	}
	if last.Held != last.Total || last.Size != uint64(len(data)) {
		t.Fatalf("last progress %+v", last)
	}
	r, err := getter.Open(ctx, pub.Name)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	if !bytes.Equal(got, data) {
		t.Fatal("fetched bytes differ")
	}
	// Nobody learns both who asked and what: the getter looked nothing
	// up (its ORDBs did), and no provider record names the publisher or
	// the getter; the publisher's ORDBs stored records naming themselves.
	// (In a network this small the getter may be one of the publisher's
	// ORDBs: then other ORDBs relay queries to it, as to any provider.)
	getterIsPubORDB := slices.Contains(nodes[1].peerCircs.Ever(), getter.ID())
	if st := getter.relay.Stats(); st.Lookups != 0 || st.Queries != 0 && !getterIsPubORDB {
		t.Fatalf("the getter's ORDB service looked up or was asked: %+v", st)
	}
	if st := nodes[1].relay.Stats(); st.Stores != 0 {
		t.Fatalf("the publisher's ORDB service stored provider records: %+v", st)
	}
	res, err := bridge.dht.FindValue(ctx, pub.Name)
	if err != nil || len(res.Records) == 0 {
		t.Fatalf("no provider record in the DHT: %v", err)
	}
	pubORDBs := map[proto.NodeID]bool{}
	for _, id := range nodes[1].peerCircs.ORDBs() {
		pubORDBs[id] = true
	}
	for _, rec := range res.Records {
		// In a network this small the getter may be one of the
		// publisher's ORDBs: then, and only then, may a record name it.
		if rec.ORDB == nodes[1].ID() || !pubORDBs[rec.ORDB] {
			t.Fatalf("a provider record names %v: not one of the publisher's ORDBs", rec.ORDB.Short())
		}
	}
	// What the getter fetched is in its cache, not in what its ORDB serves.
	if getter.served != nil {
		if _, err := getter.served.Descriptor(pub.Name); err == nil {
			t.Fatal("fetched content reachable by the getter's ORDB service")
		}
	}
	// The content's descriptor is not signed by the publisher's node key.
	d, err := nodes[1].served.Descriptor(pub.Name)
	if err != nil || bytes.Equal(d.PublicKey, nodes[1].id.PublicKey()) {
		t.Fatalf("descriptor key is the node identity key (%v)", err)
	}
	// The publisher restarts (same ID, a new port): it announces again
	// what it serves, and a new node fetches it from there.
	pubCfg := nodes[1].cfg.Load()
	pubID := nodes[1].ID()
	nodes[1].Close()
	again := startTest(t, ctx, *pubCfg)
	if again.ID() != pubID {
		t.Fatalf("restarted publisher has ID %v, had %v", again.ID(), pubID)
	}
	waitFor(t, 30*time.Second, "the restarted publisher's advertisement", func() bool {
		return again.peer.Stats().Adverts > 0
	})
	late := startTest(t, ctx, testConfig(t, t.TempDir(), bridge.BridgeLine()))
	waitFor(t, 30*time.Second, "the late node's directory", func() bool { _, ok := late.dir.Get(again.ID()); return ok && late.dir.Len() >= 4 })
	if _, err := late.Fetch(ctx, pub.Name, nil); err != nil {
		t.Fatalf("fetch from the restarted publisher: %v", err)
	}

	// A content nobody published is not found, quickly.
	t0 := time.Now()
	if _, err := getter.Fetch(ctx, proto.HashName{1, 2, 3}, nil); !errors.Is(err, ErrNotFound) || time.Since(t0) > 20*time.Second {
		t.Fatalf("fetch of unknown content: %v after %v", err, time.Since(t0))
	}
}

// TestFillReader: each Read fills its buffer until the end.
func TestFillReader(t *testing.T) {
	data := make([]byte, 1000)
	for i := range data {
		data[i] = byte(i)
	}
	f := fillReader{smallReads{bytes.NewReader(data)}}
	buf := make([]byte, 300)
	for _, want := range []int{300, 300, 300, 100} {
		if n, err := f.Read(buf); n != want || err != nil {
			t.Fatalf("Read: %d, %v; want %d", n, err, want)
		}
	}
	if n, err := f.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("at the end: %d, %v", n, err)
	}
	if err := iotest.TestReader(fillReader{smallReads{bytes.NewReader(data)}}, data); err != nil {
		t.Fatal(err)
	}
}

// smallReads gives at most 7 bytes per Read, as a chunkstore.Reader gives
// one chunk.
type smallReads struct{ *bytes.Reader }

func (s smallReads) Read(p []byte) (int, error) { return s.Reader.Read(p[:min(len(p), 7)]) }

func TestAPIGuard(t *testing.T) {
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	n := startTest(t, ctx, testConfig(t, dir))
	fi, err := os.Stat(filepath.Join(dir, CookieFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cookie file: %v %v", fi, err)
	}
	base := "http://" + n.APIAddr()
	for _, tt := range []struct {
		cookie, path string
		code         int
		body         string
	}{
		{"", "/api/v1/status", 401, "cookie"},
		{"wrong", "/api/v1/status", 401, "cookie"},
		{"good", "/api/v1/status", 200, n.ID().String()},
		{"good", "/api/v1/content/xyz", 400, "hash_name"},
		{"good", "/api/v1/content/" + strings.Repeat("00", 20), 404, "not found"},
		{"", "/api/v1/debug/memory", 401, "cookie"},
		{"", "/api/v1/debug/pprof/heap", 401, "cookie"},
		{"good", "/api/v1/debug/pprof/heap", 200, ""},
	} {
		req, _ := http.NewRequest("GET", base+tt.path, nil)
		if tt.cookie == "good" {
			req.Header.Set(CookieHeader, n.api.cookie)
		} else if tt.cookie != "" {
			req.Header.Set(CookieHeader, tt.cookie)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.code || !strings.Contains(string(b), tt.body) {
			t.Errorf("%s %q: %d %s", tt.path, tt.cookie, resp.StatusCode, b)
		}
	}
	c, err := Dial(ctx, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if st, err := c.Status(ctx); err != nil || st.ID != n.ID().String() {
		t.Fatalf("client status: %+v %v", st, err)
	}
	// Content comes out whole and by ranges (fillReader under
	// ServeContent).
	data := make([]byte, 3*proto.ChunkSize*100+17)
	for i := range data {
		data[i] = byte(i * 7)
	}
	pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
	pub, _ := n.Publish(pctx, "application/octet-stream", bytes.NewReader(data)) // no DHT peers: only the announcement fails
	pcancel()
	if pub.Size != uint64(len(data)) {
		t.Fatalf("published %+v", pub)
	}
	var got bytes.Buffer
	if _, err := c.Content(ctx, pub.Name.String(), &got); err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("content: %d bytes, %v", got.Len(), err)
	}
	req, _ := http.NewRequest("GET", base+"/api/v1/content/"+pub.Name.String(), nil)
	req.Header.Set(CookieHeader, n.api.cookie)
	req.Header.Set("Range", "bytes=1000-2999")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	part, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(part, data[1000:3000]) {
		t.Fatalf("range: %d, %d bytes", resp.StatusCode, len(part))
	}

	// The memory figures are this process's (the node runs in it).
	m, err := c.Memory(ctx)
	if err != nil || m.HeapAlloc == 0 || m.HeapAlloc > m.Sys || m.Goroutines < 2 {
		t.Fatalf("memory: %+v %v", m, err)
	}
	if rss := ProcessRSS(os.Getpid()); rss == 0 || m.RSS == 0 || rss < m.HeapAlloc/2 {
		t.Fatalf("RSS %d, reported %d, heap %d", rss, m.RSS, m.HeapAlloc)
	}
}

// Reload changes the log level and the bridges at run time (SIGHUP), and
// refuses a bad configuration.
func TestReload(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bridge := startTest(t, ctx, testConfig(t, t.TempDir()))
	c := testConfig(t, t.TempDir())
	level := new(slog.LevelVar)
	n, err := Start(Options{Config: c, LogLevel: level})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	go n.Run(ctx)
	c.LogLevel = "debug"
	c.Bridges = []string{bridge.BridgeLine()}
	if err := n.Reload(c); err != nil {
		t.Fatal(err)
	}
	if level.Level() != slog.LevelDebug {
		t.Fatalf("level %v after reload", level.Level())
	}
	waitFor(t, 20*time.Second, "the reloaded bridge to know the node", func() bool {
		_, ok := bridge.dir.Get(n.ID())
		return ok
	})
	c.Tunnels.Hops = 0
	if err := n.Reload(c); err == nil {
		t.Fatal("bad configuration accepted by Reload")
	}
}

func TestAdvertised(t *testing.T) {
	c := config.Default()
	tcp := func(s string) net.Addr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }
	if _, err := advertised(c, tcp("0.0.0.0:7700")); err == nil || !strings.Contains(err.Error(), "advertise") {
		t.Fatalf("listen on every interface without advertise: %v", err)
	}
	if ap, err := advertised(c, tcp("127.0.0.1:7700")); err != nil || ap.String() != "127.0.0.1:7700" {
		t.Fatalf("specific listen address: %v %v", ap, err)
	}
	c.Advertise = "203.0.113.5:7700"
	if ap, err := advertised(c, tcp("0.0.0.0:7700")); err != nil || ap.String() != c.Advertise {
		t.Fatalf("advertise: %v %v", ap, err)
	}
}
