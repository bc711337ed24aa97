package ordb

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"

	"veil/circuits"
	"veil/facilitator"
	"veil/proto"
)

// This file runs the facilitator path end to end on 127.0.0.1: a
// requester's 3-hop circuits to ORDBs, the ORDBs' circuits to a
// facilitator found in the DHT, the facilitator's freerider client, and an
// ordinary anacrolix seeder that announces to a tracker the test runs.

// torrentFixture is content on disk, its metainfo and a seeder of it.
type torrentFixture struct {
	content []byte
	mi      *metainfo.MetaInfo
	ih      facilitator.InfoHash
	seeder  netip.AddrPort
}

// seedTorrent writes size pseudo-random bytes, builds their torrent
// (announcing to tracker, if set) and seeds it with an anacrolix client on
// 127.0.0.1.
func seedTorrent(tb testing.TB, size int, pieceLen int64, tracker string) *torrentFixture {
	tb.Helper()
	tf, stop, err := seedTorrentIn(tb.TempDir(), size, pieceLen, tracker)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(stop)
	return tf
}

// seedTorrentIn is seedTorrent in dir; stop ends the seeder.
func seedTorrentIn(dir string, size int, pieceLen int64, tracker string) (*torrentFixture, func(), error) {
	rng := rand.New(rand.NewPCG(uint64(size), 7))
	content := make([]byte, size)
	for i := 0; i+8 <= len(content); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			content[i+j] = byte(v >> (8 * j))
		}
	}
	name := "content.bin"
	if err := os.WriteFile(filepath.Join(dir, name), content, 0o644); err != nil {
		return nil, nil, err
	}
	info := metainfo.Info{PieceLength: pieceLen}
	if err := info.BuildFromFilePath(filepath.Join(dir, name)); err != nil {
		return nil, nil, err
	}
	ib, err := bencode.Marshal(info)
	if err != nil {
		return nil, nil, err
	}
	mi := &metainfo.MetaInfo{InfoBytes: ib, Announce: tracker}
	cfg := torrent.NewDefaultClientConfig()
	cfg.Seed = true
	cfg.DataDir = dir
	cfg.ListenHost = func(string) string { return "127.0.0.1" }
	cfg.ListenPort = 0
	cfg.NoDHT, cfg.DisablePEX, cfg.DisableUTP, cfg.DisableIPv6 = true, true, true, true
	cfg.DisableTrackers = tracker == ""
	cfg.NoDefaultPortForwarding = true
	cfg.Slogger = slog.New(slog.DiscardHandler)
	cl, err := torrent.NewClient(cfg)
	if err != nil {
		return nil, nil, err
	}
	stop := func() { cl.Close() }
	t, err := cl.AddTorrent(mi)
	if err != nil {
		stop()
		return nil, nil, err
	}
	<-t.GotInfo()
	if err := t.VerifyData(); err != nil {
		stop()
		return nil, nil, err
	}
	select {
	case <-t.Complete().On():
	case <-time.After(time.Minute):
		stop()
		return nil, nil, fmt.Errorf("seeder: data incomplete after verification")
	}
	return &torrentFixture{content: content, mi: mi, ih: facilitator.InfoHash(mi.HashInfoBytes()),
		seeder: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(cl.LocalPort()))}, stop, nil
}

// testTracker is an HTTP tracker on 127.0.0.1 that records every
// announce's peer_id and port.
type testTracker struct {
	url string
	mu  sync.Mutex
	ann []string // "peer_id port"
}

func startTracker(t testing.TB) *testTracker {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &testTracker{url: "http://" + l.Addr().String() + "/announce"}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		tr.mu.Lock()
		tr.ann = append(tr.ann, q.Get("peer_id")+" "+q.Get("port"))
		tr.mu.Unlock()
		io.WriteString(w, "d8:intervali600e5:peers0:e")
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return tr
}

func (tr *testTracker) announces() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]string(nil), tr.ann...)
}

// countingListener accepts and counts connections: a seeder address the
// facilitator must never reach.
func countingListener(t testing.TB, addr string) (netip.AddrPort, *atomic.Int64) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	var n atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close() })
	return netip.MustParseAddrPort(l.Addr().String()), &n
}

// facBuilder builds one-hop circuits from an ORDB to a facilitator and
// opens streams to its facilitator service.
type facBuilder struct {
	net  *testNet
	self *netNode
}

type facCircuit struct{ c *circuits.Circuit }

func (f facCircuit) OpenStream(ctx context.Context) (CellStream, error) {
	return f.c.OpenStream(ctx, facilitator.ServiceDest)
}
func (f facCircuit) Done() <-chan struct{} { return f.c.Done() }
func (f facCircuit) Close() error          { return f.c.Close() }

func (b *facBuilder) BuildToFacilitator(ctx context.Context, rec proto.ProviderRecord) (ORDBCircuit, error) {
	d, ok := b.net.dir[rec.ORDB]
	if !ok || d.Flags&proto.FlagFacilitator == 0 {
		return nil, fmt.Errorf("no facilitator descriptor for %v", rec.ORDB.Short())
	}
	c, err := b.self.sw.Build(ctx, []proto.NodeDescriptor{d})
	if err != nil {
		return nil, err
	}
	return facCircuit{c}, nil
}

// facNetwork is the whole setup of a facilitator test.
type facNetwork struct {
	net     *testNet
	ctx     context.Context
	infra   []*netNode
	fac     *netNode
	client  *facilitator.Client
	server  *facilitator.Server
	tamper  atomic.Bool
	req     *netNode
	circs   []*circuits.Circuit
	finders []*FacilitatorFinder
}

// newFacNetwork starts 6 infrastructure nodes (relays, ORDBs, DHT), a
// facilitator node (relay, DHT, facilitator service) whose client dials
// peers, and a requester with `circuits` 3-hop circuits, each ending at a
// different ORDB.
func newFacNetwork(t testing.TB, peers []netip.AddrPort, block *facilitator.Blocklist, nCircs int) *facNetwork {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	fn := &facNetwork{ctx: ctx}
	fn.net = newTestNet(t, ctx)
	t.Cleanup(fn.net.close)
	for range 6 {
		b := &facBuilder{net: fn.net}
		nd := fn.net.addInfra("infra", func(c *RelayConfig) {
			c.Core.Facilitators = true
			c.Core.FacilitatorTimeout = 30 * time.Second
			f, err := NewFacilitatorFinder(FinderConfig{Self: c.Core.Self, DHT: c.DHT, Builder: b})
			if err != nil {
				t.Fatal(err)
			}
			fn.finders = append(fn.finders, f)
			c.Facilitators = f
		})
		b.self = nd // before any query reaches the Relay
		fn.infra = append(fn.infra, nd)
	}
	t.Cleanup(func() {
		for _, f := range fn.finders {
			f.Close()
		}
	})
	// The facilitator: a relay with the F flag and the facilitator service.
	fn.fac = fn.net.addInfra("facilitator", func(c *RelayConfig) { c.Facilitator = true })
	fn.fac.desc = fn.reflag(t, fn.fac, proto.FlagRelay|proto.FlagORDB|proto.FlagFacilitator)
	cfg := facilitator.DefaultConfig()
	cfg.AllowPrivatePeers = true
	cfg.Peers = peers
	cfg.Blocklist = block
	cfg.MetadataTimeout = 3 * time.Second
	cfg.ProgressTimeout = 30 * time.Second
	cfg.Capacity = 16 << 20
	var err error
	if fn.client, err = facilitator.New(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fn.client.Close() })
	if fn.server, err = facilitator.NewServer(facilitator.ServerConfig{Fetcher: fn.client}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fn.server.Close() })
	fn.fac.sw.Handle(facilitator.ServiceDest, func(s *circuits.Stream) {
		var st facilitator.Stream = s
		if fn.tamper.Load() {
			st = &tamperStream{Stream: s}
		}
		fn.server.Serve(st)
	})
	fn.net.joinDHT()
	if _, err := fn.fac.dht.Provide(ctx, FacilitatorKey, proto.MaxPieces, true); err != nil {
		t.Fatal(err)
	}
	fn.req = fn.net.addPeer("R")
	for i := range nCircs {
		a, b := fn.infra[(i+1)%6], fn.infra[(i+2)%6]
		fn.circs = append(fn.circs, fn.net.build(fn.req, a, b, fn.infra[i%6]))
	}
	return fn
}

// reflag re-signs nd's descriptor with flags, in the switch and the
// test's directory.
func (fn *facNetwork) reflag(t testing.TB, nd *netNode, flags uint8) proto.NodeDescriptor {
	d, err := nd.id.Descriptor(nd.desc.Addrs, flags, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fn.net.dir[nd.id.ID] = d
	return d
}

// open is the requester's GetConfig.Open: a stream to the ORDB at the end
// of circuit worker.
func (fn *facNetwork) open(ctx context.Context, worker int) (facilitator.Stream, error) {
	return fn.circs[worker%len(fn.circs)].OpenStream(ctx, ORDBDest)
}

// tamperStream flips one byte of the data of the 20th DB_MORE cell it
// writes: a facilitator that changes the content.
type tamperStream struct {
	facilitator.Stream
	n int
}

func (s *tamperStream) WriteCell(cmd proto.RelayCommand, data []byte) error {
	if cmd == proto.RelayDBMore {
		if s.n++; s.n == 20 {
			data = append([]byte(nil), data...)
			data[len(data)/2] ^= 0x40
		}
	}
	return s.Stream.WriteCell(cmd, data)
}

// listening returns this process's listening TCP and bound UDP sockets.
func listening(t testing.TB) map[string]bool {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	mine := map[string]bool{}
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && strings.HasPrefix(l, "socket:[") {
			mine[strings.Trim(strings.TrimPrefix(l, "socket:"), "[]")] = true
		}
	}
	out := map[string]bool{}
	for _, p := range []string{"tcp", "tcp6", "udp", "udp6"} {
		f, err := os.Open("/proc/self/net/" + p)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan()
		for sc.Scan() {
			fl := strings.Fields(sc.Text())
			if len(fl) < 10 || !mine[fl[9]] || (strings.HasPrefix(p, "tcp") && fl[3] != "0A") {
				continue
			}
			out[p+" "+fl[1]] = true
		}
		f.Close()
	}
	return out
}

// hexPort is how /proc/self/net shows 127.0.0.1:port.
func hexPort(ap netip.AddrPort) string {
	a := ap.Addr().As4()
	return fmt.Sprintf("tcp %02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], ap.Port())
}

// facSize is the torrent TestFacilitatorMagnet fetches: 50 MB, or 8 MB
// under -short (CI's -race run).
func facSize() int {
	if testing.Short() {
		return 8 << 20
	}
	return 50 << 20
}

// TestFacilitatorMagnet: a requester fetches a torrent by magnet link
// through 3-hop circuits to its ORDBs, which find the facilitator in the
// DHT (its F-flagged record) and reach it through circuits; the
// facilitator fetches from an ordinary seeder as a freerider. The bytes
// are identical; the facilitator uploaded nothing, never announced to the
// tracker the magnet names (the seeder did), opened no listening socket,
// never contacted the blocklisted seeder; a facilitator that changes a
// byte is caught by the requester; unknown content ends with DB_END and a
// clear error in bounded time.
func TestFacilitatorMagnet(t *testing.T) {
	checkLeaks(t)
	before := listening(t)
	tracker := startTracker(t)
	tf := seedTorrent(t, facSize(), 256<<10, tracker.url)
	blocked, contacts := countingListener(t, "127.0.0.2:0")
	bl, err := facilitator.ParseBlocklist(strings.NewReader("test seeder:127.0.0.2-127.0.0.2\n"))
	if err != nil {
		t.Fatal(err)
	}
	fn := newFacNetwork(t, []netip.AddrPort{blocked, tf.seeder}, bl, 4)
	known := map[string]bool{hexPort(tf.seeder): true, hexPort(netip.MustParseAddrPort(strings.TrimSuffix(strings.TrimPrefix(tracker.url, "http://"), "/announce"))): true}
	for _, nd := range fn.net.nodes {
		for _, a := range nd.desc.Addrs {
			known[hexPort(a)] = true
		}
	}
	known[hexPort(blocked)] = true

	magnet := fmt.Sprintf("magnet:?xt=urn:btih:%v&dn=content.bin&tr=%s", tf.ih, tracker.url)
	target, err := facilitator.ParseTarget(magnet)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	out.Grow(len(tf.content))
	start := time.Now()
	res, err := facilitator.Get(fn.ctx, facilitator.GetConfig{Target: target, Open: fn.open, Workers: 4, SegmentBytes: 4 << 20}, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d bytes through the facilitator in %v", res.Length, time.Since(start))
	if out.String() != string(tf.content) {
		t.Fatalf("fetched %d bytes, not the torrent's %d", out.Len(), len(tf.content))
	}

	st := fn.client.Stats()
	if st.BytesWrittenData != 0 {
		t.Errorf("facilitator uploaded %d bytes", st.BytesWrittenData)
	}
	if st.BytesReadUsefulData < int64(len(tf.content)) {
		t.Errorf("facilitator read only %d bytes from the swarm", st.BytesReadUsefulData)
	}
	anns := tracker.announces()
	if len(anns) == 0 {
		t.Error("the tracker saw no announce at all: the check proves nothing")
	}
	for _, a := range anns {
		if strings.HasPrefix(a, "-TR3000-") || strings.HasSuffix(a, " 0") {
			t.Errorf("facilitator announced: %q", a)
		}
	}
	if n := contacts.Load(); n != 0 {
		t.Errorf("blocklisted seeder contacted %d times", n)
	}
	if la := fn.client.ListenAddrs(); len(la) != 0 {
		t.Errorf("facilitator listens on %v", la)
	}
	for s := range listening(t) {
		if !before[s] && !known[s] {
			t.Errorf("a socket no test component accounts for: %s", s)
		}
	}
	var relayed int64
	for _, nd := range fn.infra {
		relayed += nd.relay.Stats().Delivered
	}
	if relayed == 0 {
		t.Error("no ORDB relayed anything")
	}

	// A facilitator that changes a byte is caught.
	fn.tamper.Store(true)
	_, err = facilitator.Get(fn.ctx, facilitator.GetConfig{Target: target, Open: fn.open, Workers: 1, SegmentBytes: 4 << 20}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "SHA-1") {
		t.Fatalf("tampering facilitator: got %v, want a piece hash failure", err)
	}
	fn.tamper.Store(false)

	// Unknown content: DB_END from the ORDB and a clear error, in bounded time.
	start = time.Now()
	_, err = facilitator.Get(fn.ctx, facilitator.GetConfig{Target: facilitator.Magnet{InfoHash: facilitator.InfoHash{0xde, 0xad}},
		Open: fn.open, Workers: 1, MetadataTimeout: 20 * time.Second}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "unavailable") {
		t.Fatalf("unknown torrent: got %v", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("unknown torrent took %v to end", d)
	}
}
