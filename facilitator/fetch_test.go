package facilitator

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

const testPieceLen = 256 << 10

// testSize is 50 MB as asked of a facilitator test; -short fetches 8 MB.
func testSize() int {
	if testing.Short() {
		return 8 << 20
	}
	return 50 << 20
}

// freeriderConfig gives a client that may dial 127.0.0.1, with a capacity
// of 16 pieces and timeouts that end a failing test quickly.
func testConfig() Config {
	return Config{
		Capacity:          16 * testPieceLen,
		MetadataTimeout:   20 * time.Second,
		ProgressTimeout:   60 * time.Second,
		AllowPrivatePeers: true,
	}
}

// fetchAll fetches every piece of tt through a fresh freerider and checks
// what the brief asks of it: identical bytes, in order, every piece passing
// the requester's check, nothing uploaded, no listening socket, the store
// never above Capacity. It returns the client for further checks.
func fetchAll(t *testing.T, tt *testTorrent, cfg Config, opts OpenOptions) *Client {
	t.Helper()
	before := listeningSockets(t)
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tr, err := c.Open(ctx, tt.ih, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()

	// The requester's end-to-end check, on the bytes the facilitator hands out.
	info, err := VerifyInfo(tt.ih, tr.Info().Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if info.TotalLength() != int64(len(tt.content)) {
		t.Fatalf("info says %d bytes, content has %d", info.TotalLength(), len(tt.content))
	}
	next := 0
	var got bytes.Buffer
	for p, err := range tr.Pieces(ctx, 0, info.NumPieces()) {
		if err != nil {
			t.Fatalf("after %d pieces: %v", next, err)
		}
		if p.Index != next {
			t.Fatalf("piece %d handed out when %d was next", p.Index, next)
		}
		if err := info.VerifyPiece(p.Index, p.Data); err != nil {
			t.Fatal(err)
		}
		got.Write(p.Data)
		next++
		if next == info.NumPieces()/2 {
			checkNoNewSockets(t, c, before)
		}
	}
	if next != info.NumPieces() {
		t.Fatalf("got %d pieces, want %d", next, info.NumPieces())
	}
	if !bytes.Equal(got.Bytes(), tt.content) {
		t.Fatal("fetched bytes differ from the content")
	}
	st := c.Stats()
	if st.BytesWrittenData != 0 {
		t.Errorf("uploaded %d bytes of content, want 0", st.BytesWrittenData)
	}
	held, maxHeld, _ := tr.(*transfer).storeStats()
	if maxHeld > cfg.Capacity || maxHeld == 0 {
		t.Errorf("store held at most %d bytes, want in (0, %d]", maxHeld, cfg.Capacity)
	}
	if held > int64(testPieceLen) {
		t.Errorf("store still holds %d bytes after the last piece was taken", held)
	}
	checkNoNewSockets(t, c, before)
	t.Logf("fetched %d bytes; store peak %d of %d; %d writes refused at capacity",
		len(tt.content), maxHeld, cfg.Capacity, tr.(*transfer).writeRefusals.Load())
	return c
}

func checkNoNewSockets(t *testing.T, c *Client, before map[string]bool) {
	t.Helper()
	if la := c.ListenAddrs(); len(la) != 0 {
		t.Errorf("client listens on %v", la)
	}
	for s := range listeningSockets(t) {
		if !before[s] {
			t.Errorf("new listening or bound socket while fetching: %s", s)
		}
	}
}

func TestFetchFromAnacrolixSeeder(t *testing.T) {
	tt := makeTorrent(t, "anacrolix.bin", testPieceLen, testSize())
	seeder := startAnacrolixSeeder(t, tt)
	fetchAll(t, tt, testConfig(), OpenOptions{Peers: []netip.AddrPort{seeder}})
}

func TestFetchFromAria2(t *testing.T) {
	tt := makeTorrent(t, "aria2.bin", testPieceLen, testSize())
	seeder := startAria2Seeder(t, tt, "127.0.0.1")
	fetchAll(t, tt, testConfig(), OpenOptions{Peers: []netip.AddrPort{seeder}})
}

func TestFetchFromTransmission(t *testing.T) {
	tt := makeTorrent(t, "transmission.bin", testPieceLen, testSize())
	seeder := startTransmissionSeeder(t, tt)
	fetchAll(t, tt, testConfig(), OpenOptions{Peers: []netip.AddrPort{seeder}})
}

// A seeder on a blocklisted address is never dialled, even when given as a
// peer; the content comes from the other one.
func TestBlocklistedSeederNeverContacted(t *testing.T) {
	tt := makeTorrent(t, "blocked.bin", testPieceLen, 4<<20)
	good := startAnacrolixSeeder(t, tt)
	blocked := startAria2Seeder(t, tt, "127.0.0.2")
	bl, err := ParseBlocklist(strings.NewReader("# test\nlocal test seeder:127.0.0.2-127.0.0.2\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Blocklist = bl
	var dialed []string
	var mu = make(chan struct{}, 1)
	cfg.dial = func(ctx context.Context, network, addr string) (_ netConn, err error) {
		mu <- struct{}{}
		dialed = append(dialed, addr)
		<-mu
		return defaultDial(ctx, network, addr)
	}
	fetchAll(t, tt, cfg, OpenOptions{Peers: []netip.AddrPort{blocked, good}})
	mu <- struct{}{}
	defer func() { <-mu }()
	for _, a := range dialed {
		if strings.HasPrefix(a, "127.0.0.2:") {
			t.Errorf("dialled the blocklisted seeder at %s", a)
		}
	}
	if len(dialed) == 0 {
		t.Error("no dial went through the test dialer")
	}
}

func TestOpenErrors(t *testing.T) {
	cfg := testConfig()
	cfg.MetadataTimeout = 2 * time.Second
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	unknown, _ := ParseInfoHash("0123456789abcdef0123456789abcdef01234567")

	// Unknown content, nobody to ask: a clear error once the timeout passes.
	start := time.Now()
	_, err = c.Open(context.Background(), unknown, OpenOptions{})
	if !errors.Is(err, ErrNoMetadata) {
		t.Fatalf("Open with no peers: %v, want ErrNoMetadata", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v to give up, timeout was 2s", d)
	}
	t.Log(err)

	// A peer that does not answer (nothing listens there): same.
	dead := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(freePort(t, "127.0.0.1")))
	_, err = c.Open(context.Background(), unknown, OpenOptions{Peers: []netip.AddrPort{dead}})
	if !errors.Is(err, ErrNoMetadata) {
		t.Fatalf("Open with a dead peer: %v, want ErrNoMetadata", err)
	}

	// Info bytes that do not hash to the infohash are refused at once.
	tt := makeTorrent(t, "small.bin", 16<<10, 100<<10)
	_, err = c.Open(context.Background(), unknown, OpenOptions{InfoBytes: tt.mi.InfoBytes})
	if !errors.Is(err, ErrInfoHashMismatch) {
		t.Fatalf("Open with foreign info: %v, want ErrInfoHashMismatch", err)
	}

	// Known info, no seeder: the piece sequence ends with ErrStalled.
	cfg2 := testConfig()
	cfg2.ProgressTimeout = 2 * time.Second
	c2, err := New(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	tr, err := c2.Open(context.Background(), tt.ih, OpenOptions{InfoBytes: tt.mi.InfoBytes})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	n := 0
	for _, err := range tr.Pieces(context.Background(), 0, tr.Info().NumPieces()) {
		n++
		if !errors.Is(err, ErrStalled) {
			t.Fatalf("Pieces with no seeder: %v, want ErrStalled", err)
		}
	}
	if n != 1 {
		t.Fatalf("Pieces yielded %d times, want one error", n)
	}
	if _, err := c2.Open(context.Background(), tt.ih, OpenOptions{InfoBytes: tt.mi.InfoBytes}); !errors.Is(err, ErrBusy) {
		t.Fatalf("second Open of an open torrent: %v, want ErrBusy", err)
	}
}

// A piece dropped after delivery is fetched again when asked for again.
func TestDroppedPieceRefetched(t *testing.T) {
	tt := makeTorrent(t, "refetch.bin", testPieceLen, 2<<20)
	seeder := startAnacrolixSeeder(t, tt)
	cfg := testConfig()
	cfg.StallTimeout = 4 * time.Second
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tr, err := c.Open(ctx, tt.ih, OpenOptions{Peers: []netip.AddrPort{seeder}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	get := func(first, end int) {
		t.Helper()
		want := first
		for p, err := range tr.Pieces(ctx, first, end) {
			if err != nil {
				t.Fatal(err)
			}
			if p.Index != want || !bytes.Equal(p.Data, tt.content[int64(p.Index)*testPieceLen:][:len(p.Data)]) {
				t.Fatalf("piece %d (want %d) differs", p.Index, want)
			}
			want++
		}
		if want != end {
			t.Fatalf("got pieces up to %d, want %d", want, end)
		}
	}
	get(0, 4)
	before := c.Stats().BytesReadUsefulData
	if held, _, _ := tr.(*transfer).storeStats(); held != 0 {
		t.Fatalf("%d bytes held between sequences", held)
	}
	get(2, 6)
	if got := c.Stats().BytesReadUsefulData - before; got < 4*testPieceLen {
		t.Fatalf("second sequence read %d useful bytes, want >= %d (pieces 2 and 3 again, 4 and 5 new)", got, 4*testPieceLen)
	}
}
