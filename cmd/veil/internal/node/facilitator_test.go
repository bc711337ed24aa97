package node

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
)

// seedTorrent seeds size random bytes with an ordinary anacrolix client on
// 127.0.0.1 and returns the content, its infohash and the seeder.
func seedTorrent(t *testing.T, size int) ([]byte, string, netip.AddrPort) {
	dir := t.TempDir()
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(9, 9))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(filepath.Join(dir, "t.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	info := metainfo.Info{PieceLength: 64 << 10}
	if err := info.BuildFromFilePath(filepath.Join(dir, "t.bin")); err != nil {
		t.Fatal(err)
	}
	ib, err := bencode.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	mi := &metainfo.MetaInfo{InfoBytes: ib}
	cfg := torrent.NewDefaultClientConfig()
	cfg.Seed, cfg.DataDir = true, dir
	cfg.ListenHost = func(string) string { return "127.0.0.1" }
	cfg.ListenPort = 0
	cfg.NoDHT, cfg.DisablePEX, cfg.DisableTrackers, cfg.DisableUTP, cfg.DisableIPv6 = true, true, true, true, true
	cfg.NoDefaultPortForwarding = true
	cfg.Slogger = slog.New(slog.DiscardHandler)
	cl, err := torrent.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	tr, err := cl.AddTorrent(mi)
	if err != nil {
		t.Fatal(err)
	}
	<-tr.GotInfo()
	if err := tr.VerifyData(); err != nil {
		t.Fatal(err)
	}
	<-tr.Complete().On()
	return data, mi.HashInfoBytes().HexString(), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(cl.LocalPort()))
}

// A node with roles.facilitator stores its F-flagged record; another
// node fetches a torrent by magnet through its own ORDB circuits (in
// process and through the local API): the ORDBs find the facilitator in
// the DHT. The facilitator uploaded nothing; the getter's own ORDB
// service looked nothing up for it.
func TestNodeFacilitatorTorrent(t *testing.T) {
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data, ih, seeder := seedTorrent(t, 3<<20+12345)
	bc := testConfig(t, t.TempDir())
	bc.Roles.Bridge = true
	bridge := startTest(t, ctx, bc)
	nodes := []*Node{bridge}
	for i := range 6 {
		c := testConfig(t, t.TempDir(), bridge.BridgeLine())
		if i == 2 {
			c.Roles.Facilitator = true
			c.Facilitator.Peers = []string{seeder.String()}
		}
		nodes = append(nodes, startTest(t, ctx, c))
	}
	fac := nodes[3]
	if fac.fac == nil {
		t.Fatal("roles.facilitator did not start the facilitator role")
	}
	for _, n := range nodes {
		waitFor(t, within(ctx, 30*time.Second), "directories", func() bool { return n.dir.Len() >= len(nodes)-2 })
	}
	getter := nodes[len(nodes)-1]
	magnet := fmt.Sprintf("magnet:?xt=urn:btih:%s&dn=t.bin", ih)
	// The facilitator's record may not be stored at every ORDB the
	// fetch's circuits end at yet (the network is seconds old): an
	// "unavailable" is asked again until a deadline, any other error fails.
	retry := func(what string, fetch func() error) {
		for deadline := time.Now().Add(60 * time.Second); ; {
			err := fetch()
			if err == nil {
				return
			}
			if time.Now().After(deadline) || !strings.Contains(err.Error(), "unavailable") {
				t.Fatalf("%s: %v", what, err)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	var got bytes.Buffer
	var lastDone int64
	retry("in process", func() error {
		got.Reset()
		_, err := getter.FetchTorrent(ctx, TorrentRequest{Target: magnet, Progress: func(d, _ int64) { lastDone = d }}, &got)
		return err
	})
	if !bytes.Equal(got.Bytes(), data) || lastDone != int64(len(data)) {
		t.Fatalf("fetched %d bytes (progress %d), not the torrent's %d", got.Len(), lastDone, len(data))
	}
	// Through the local API, the way `veil get MAGNET` asks a running node.
	c := &Client{Base: "http://" + getter.APIAddr(), Cookie: getter.api.cookie, HTTP: &http.Client{}}
	var viaAPI bytes.Buffer
	retry("API", func() error {
		viaAPI.Reset()
		return c.Torrent(ctx, TorrentRequest{Target: ih}, &viaAPI)
	})
	if !bytes.Equal(viaAPI.Bytes(), data) {
		t.Fatal("API: bytes differ")
	}
	if err := c.Torrent(ctx, TorrentRequest{Target: "magnet:?xt=urn:btih:abc"}, &viaAPI); err == nil || !strings.Contains(err.Error(), "bad") {
		t.Fatalf("API, bad magnet: %v", err)
	}
	if st := fac.fac.client.Stats(); st.BytesWrittenData != 0 || st.BytesReadUsefulData < int64(len(data)) {
		t.Fatalf("facilitator stats %+v", st)
	}
	if st := getter.relay.Stats(); st.Lookups != 0 || st.Queries != 0 {
		t.Fatalf("the getter's own ORDB service was used for its fetch: %+v", st)
	}
}
