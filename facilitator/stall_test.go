package facilitator

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// silentPeer is a misbehaving peer written for this test: it completes the
// plaintext BitTorrent handshake, claims every piece, unchokes, and then
// never sends a byte of data. It refuses encrypted (MSE) handshakes, so the
// client falls back to plaintext.
type silentPeer struct {
	l        net.Listener
	accepted atomic.Int64
	greeted  atomic.Int64
	received lockedBuffer // what plaintext connections sent, up to 1 MiB
}

func startSilentPeer(t *testing.T, ih InfoHash, numPieces int) (*silentPeer, netip.AddrPort) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sp := &silentPeer{l: l}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			sp.accepted.Add(1)
			go sp.serve(c, ih, numPieces)
		}
	}()
	return sp, l.Addr().(*net.TCPAddr).AddrPort()
}

func (sp *silentPeer) serve(c net.Conn, ih InfoHash, numPieces int) {
	defer c.Close()
	const pstr = "\x13BitTorrent protocol"
	hs := make([]byte, 68)
	if _, err := io.ReadFull(c, hs); err != nil || string(hs[:20]) != pstr {
		return // an MSE handshake or garbage: hang up
	}
	var id [20]byte
	rand.Read(id[:])
	sp.received.Write(hs)
	// Reserved bit 20: the extension protocol, so the client sends its
	// extended handshake and the test can read what it advertises.
	out := append([]byte(pstr), 0, 0, 0, 0, 0, 0x10, 0, 0)
	out = append(out, ih[:]...)
	out = append(out, id[:]...)
	bf := make([]byte, (numPieces+7)/8)
	for i := range numPieces {
		bf[i/8] |= 0x80 >> (i % 8)
	}
	n := 1 + len(bf)
	out = append(out, byte(n>>24), byte(n>>16), byte(n>>8), byte(n), 5) // bitfield
	out = append(out, bf...)
	out = append(out, 0, 0, 0, 1, 1) // unchoke
	if _, err := c.Write(out); err != nil {
		return
	}
	sp.greeted.Add(1)
	io.Copy(&sp.received, io.LimitReader(c, 1<<20)) // read, never answered
	io.Copy(io.Discard, c)
}

// A peer that answers no request is dropped after StallTimeout, banned, and
// not dialled again; with no other peer the sequence ends with ErrStalled.
func TestStalledPeerDroppedAndBanned(t *testing.T) {
	tt := makeTorrent(t, "stall.bin", testPieceLen, 1<<20)
	sp, addr := startSilentPeer(t, tt.ih, 4)
	cfg := testConfig()
	cfg.StallTimeout = 2 * time.Second
	cfg.ProgressTimeout = 8 * time.Second
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tr, err := c.Open(context.Background(), tt.ih, OpenOptions{Peers: []netip.AddrPort{addr}, InfoBytes: tt.mi.InfoBytes})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for _, err := range tr.Pieces(context.Background(), 0, 4) {
		if !errors.Is(err, ErrStalled) {
			t.Fatalf("got %v, want ErrStalled", err)
		}
	}
	if sp.greeted.Load() == 0 {
		t.Fatal("the client never completed a handshake with the silent peer")
	}
	// What the client said names neither veil nor the library, and offers
	// no extension but ut_metadata.
	got := sp.received.String()
	if id := got[48:68]; !strings.HasPrefix(id, peerIDPrefix) {
		t.Errorf("peer id %q, want prefix %q", id, peerIDPrefix)
	}
	for _, leak := range []string{"veil", "anacrolix", "ut_holepunch", "ut_pex", "1:v"} {
		if strings.Contains(got, leak) {
			t.Errorf("the client sent %q to a peer", leak)
		}
	}
	if !strings.Contains(got, "1:md11:ut_metadatai1ee") {
		t.Errorf("extended handshake without the expected m dictionary: %q", got[68:min(len(got), 300)])
	}
	st := c.Stats()
	if st.Banned != 1 {
		t.Errorf("Banned = %d, want 1", st.Banned)
	}
	// Two connections (the second after the first was dropped for
	// stalling), each one dial with MSE and one plaintext fallback at
	// most, before the ban; the watchdog re-offers the peer every second
	// and each is refused.
	if n := sp.accepted.Load(); n > 4 {
		t.Errorf("silent peer accepted %d connections, want at most 4 (dialled again after the ban)", n)
	}
}
