package facilitator

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/anacrolix/dht/v2"
	"github.com/anacrolix/dht/v2/krpc"
	peer_store "github.com/anacrolix/dht/v2/peer-store"
	alog "github.com/anacrolix/log"
	"github.com/anacrolix/torrent/metainfo"
)

// dhtRouter is an ordinary (not passive) DHT node on 127.0.0.1 that
// records every query it gets: method and read-only flag.
type dhtRouter struct {
	s     *dht.Server
	store *peerStore
	mu    sync.Mutex
	seen  []string // "get_peers ro", "announce_peer", ...
}

func startDHTRouter(t *testing.T) *dhtRouter {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &dhtRouter{store: &peerStore{m: map[metainfo.Hash][]krpc.NodeAddr{}}}
	sc := dht.NewDefaultServerConfig()
	sc.Conn = pc
	sc.NoSecurity = true
	sc.StartingNodes = func() ([]dht.Addr, error) { return nil, nil }
	sc.PeerStore = r.store
	sc.OnQuery = func(m *krpc.Msg, _ net.Addr) bool {
		q := m.Q
		if m.ReadOnly {
			q += " ro"
		}
		r.mu.Lock()
		r.seen = append(r.seen, q)
		r.mu.Unlock()
		return true
	}
	l := alog.NewLogger("router")
	l.SetHandlers(alog.DiscardHandler)
	sc.Logger = l
	if r.s, err = dht.NewServer(sc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.s.Close)
	return r
}

// peerStore is the router's list of peers per torrent. (anacrolix's
// peer_store.InMemory of dht v2.23.0 keys peers by IP alone and then
// decodes that key as IP and port, so it returns broken addresses.)
type peerStore struct {
	mu sync.Mutex
	m  map[metainfo.Hash][]krpc.NodeAddr
}

var _ peer_store.Interface = (*peerStore)(nil)

func (p *peerStore) AddPeer(ih metainfo.Hash, na krpc.NodeAddr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m[ih] = append(p.m[ih], na)
}

func (p *peerStore) GetPeers(ih metainfo.Hash) []krpc.NodeAddr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]krpc.NodeAddr(nil), p.m[ih]...)
}

func (r *dhtRouter) addr() netip.AddrPort { return netip.MustParseAddrPort(r.s.Addr().String()) }

func (r *dhtRouter) queries() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

// answersPing sends a KRPC ping to addr and reports whether anything came
// back within wait.
func answersPing(t *testing.T, addr net.Addr, wait time.Duration) bool {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ping := []byte("d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe")
	if _, err := c.WriteTo(ping, addr); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 1500)
	n, _, err := c.ReadFrom(buf)
	return err == nil && bytes.Contains(buf[:n], []byte("1:y1:r"))
}

// The passive DHT finds a torrent's peers with get_peers alone, marked
// read-only, announces nothing, answers no query, and the Client fetches
// from the peers it found.
func TestPassiveDHTFindsPeersWithoutAnnouncing(t *testing.T) {
	router := startDHTRouter(t)
	tt := makeTorrent(t, "dht.bin", testPieceLen, 2<<20)
	seeder := startAnacrolixSeeder(t, tt)
	// The seeder "announced" to the router: the router lists it.
	router.store.AddPeer(metainfo.Hash(tt.ih), krpc.NodeAddr{IP: net.IPv4(127, 0, 0, 1).To4(), Port: int(seeder.Port())})

	pd, err := NewPassiveDHT(DHTConfig{Listen: "127.0.0.1:0", Bootstrap: []netip.AddrPort{router.addr()}, AllowPrivate: true, SearchTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer pd.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var found []netip.AddrPort
	for batch := range pd.FindPeers(ctx, tt.ih) {
		found = append(found, batch...)
	}
	if len(found) != 1 || found[0] != seeder {
		t.Fatalf("found %v, want the seeder %v; router saw %v, stored %v", found, seeder, router.queries(), router.store.GetPeers(metainfo.Hash(tt.ih)))
	}

	cfg := testConfig()
	cfg.DHT = pd
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tr, err := c.Open(ctx, tt.ih, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	for p, err := range tr.Pieces(ctx, 0, tr.Info().NumPieces()) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p.Data...)
	}
	tr.Close()
	if !bytes.Equal(got, tt.content) {
		t.Fatal("content fetched through DHT peers differs")
	}

	qs := router.queries()
	sawGetPeers := false
	for _, q := range qs {
		switch q {
		case "get_peers ro":
			sawGetPeers = true
		case "find_node ro", "ping ro":
		default:
			t.Errorf("the router got %q from the passive DHT (want read-only get_peers or find_node only)", q)
		}
	}
	if !sawGetPeers {
		t.Errorf("no get_peers reached the router: %v", qs)
	}
	if !answersPing(t, router.s.Addr(), 2*time.Second) {
		t.Fatal("the router does not answer a ping: the check below proves nothing")
	}
	if answersPing(t, pd.LocalAddr(), 300*time.Millisecond) {
		t.Error("the passive DHT answered a ping")
	}
}
