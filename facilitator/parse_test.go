package facilitator

import (
	"crypto/sha1"
	"encoding/base32"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
)

const testHex = "c9e15763f722f23e98a29decdfae341b98d53056"

func TestParseInfoHash(t *testing.T) {
	want, err := ParseInfoHash(testHex)
	if err != nil {
		t.Fatal(err)
	}
	if want.String() != testHex {
		t.Fatalf("String() = %s", want)
	}
	b32 := base32.StdEncoding.EncodeToString(want[:])
	for _, s := range []string{strings.ToUpper(testHex), b32, strings.ToLower(b32)} {
		got, err := ParseInfoHash(s)
		if err != nil || got != want {
			t.Errorf("ParseInfoHash(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, bad := range []string{"", testHex[:39], testHex + "0", "g" + testHex[1:], b32[:31] + "1", b32[:31] + "=", "z" + testHex} {
		_, err := ParseInfoHash(bad)
		if !errors.Is(err, ErrInfoHash) {
			t.Errorf("ParseInfoHash(%q) = %v, want ErrInfoHash", bad, err)
		}
	}
}

func TestParseMagnet(t *testing.T) {
	m, err := ParseMagnet("magnet:?xt=urn:btih:" + testHex + "&dn=Some+Name&x.pe=127.0.0.1:6881&x.pe=[::1]:51413&tr=udp://tracker.example:80&so=2,0,4-5,0")
	if err != nil {
		t.Fatal(err)
	}
	if m.InfoHash.String() != testHex || m.Name != "Some Name" {
		t.Errorf("got %v %q", m.InfoHash, m.Name)
	}
	wantPeers := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:6881"), netip.MustParseAddrPort("[::1]:51413")}
	if !slices.Equal(m.Peers, wantPeers) {
		t.Errorf("peers %v, want %v", m.Peers, wantPeers)
	}
	if !slices.Equal(m.Select, []int{0, 2, 4, 5}) {
		t.Errorf("select %v", m.Select)
	}
	if !slices.Equal(m.Ignored, []string{"udp://tracker.example:80"}) {
		t.Errorf("ignored %v", m.Ignored)
	}
	b32 := base32.StdEncoding.EncodeToString(m.InfoHash[:])
	if m2, err := ParseTarget("MAGNET:?xt=urn:btih:" + b32); err != nil || m2.InfoHash != m.InfoHash {
		t.Errorf("base32 magnet: %v %v", m2.InfoHash, err)
	}
	if m3, err := ParseTarget(testHex); err != nil || m3.InfoHash != m.InfoHash {
		t.Errorf("bare infohash: %v %v", m3.InfoHash, err)
	}

	bad := map[string]string{
		"no xt":          "magnet:?dn=x",
		"short hash":     "magnet:?xt=urn:btih:" + testHex[:39],
		"bad hex":        "magnet:?xt=urn:btih:" + "x" + testHex[1:],
		"bad base32":     "magnet:?xt=urn:btih:" + strings.Repeat("1", 32),
		"v2 only":        "magnet:?xt=urn:btmh:1220" + strings.Repeat("ab", 32),
		"other urn":      "magnet:?xt=urn:sha1:" + testHex,
		"two hashes":     "magnet:?xt=urn:btih:" + testHex + "&xt=urn:btih:" + strings.Repeat("0", 40),
		"host peer":      "magnet:?xt=urn:btih:" + testHex + "&x.pe=example.com:80",
		"port 0":         "magnet:?xt=urn:btih:" + testHex + "&x.pe=1.2.3.4:0",
		"bad so":         "magnet:?xt=urn:btih:" + testHex + "&so=1-a",
		"backwards so":   "magnet:?xt=urn:btih:" + testHex + "&so=5-2",
		"not magnet":     "http://example.com/?xt=urn:btih:" + testHex,
		"bad escape":     "magnet:?xt=urn:btih:" + testHex + "&dn=%zz",
		"huge so":        "magnet:?xt=urn:btih:" + testHex + "&so=0-999999999",
		"truncated xt":   "magnet:?xt=urn:bti",
		"empty":          "",
		"too long":       "magnet:?xt=urn:btih:" + testHex + "&dn=" + strings.Repeat("a", maxMagnetLen),
		"negative index": "magnet:?xt=urn:btih:" + testHex + "&so=-1",
	}
	for name, s := range bad {
		if _, err := ParseTarget(s); err == nil {
			t.Errorf("%s: ParseTarget(%.60q) accepted", name, s)
		} else if !errors.Is(err, ErrMagnet) && !errors.Is(err, ErrInfoHash) {
			t.Errorf("%s: error %v wraps neither ErrMagnet nor ErrInfoHash", name, err)
		}
	}
}

func FuzzParseTarget(f *testing.F) {
	f.Add("magnet:?xt=urn:btih:" + testHex + "&dn=a&x.pe=1.2.3.4:5&so=0,2-3")
	f.Add(testHex)
	f.Add("magnet:?xt=urn:btih:ZHQVOY7XELZD5GFCTXWN7LRUDOMNKMCW&x.pe=[::1]:1")
	f.Add("magnet:?xt=urn:btmh:1220ab")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseTarget(s)
		if err != nil {
			return
		}
		// A parsed target always names a hash that round-trips.
		if h, err := ParseInfoHash(m.InfoHash.String()); err != nil || h != m.InfoHash {
			t.Fatalf("infohash %v does not round-trip: %v", m.InfoHash, err)
		}
		for _, p := range m.Peers {
			if !p.IsValid() || p.Port() == 0 || p.Addr().Is4In6() {
				t.Fatalf("bad peer %v accepted", p)
			}
		}
		if !slices.IsSorted(m.Select) {
			t.Fatalf("selection not sorted: %v", m.Select)
		}
	})
}

func TestParseBlocklist(t *testing.T) {
	text := `# PeerGuardian list
// another comment

Bad people:1.2.3.0-1.2.3.255
With:colons:in:name:10.0.0.5-10.0.0.9
overlap:10.0.0.8-10.0.0.20
v6 range:2001:db8::-2001:db8::ffff
`
	bl, err := ParseBlocklist(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if bl.Len() != 3 {
		t.Errorf("Len() = %d, want 3 after merging the overlap", bl.Len())
	}
	for addr, want := range map[string]bool{
		"1.2.3.0": true, "1.2.3.255": true, "1.2.4.0": false, "1.2.2.255": false,
		"10.0.0.4": false, "10.0.0.5": true, "10.0.0.15": true, "10.0.0.20": true, "10.0.0.21": false,
		"::ffff:1.2.3.7": true, "2001:db8::1": true, "2001:db8::1:0": false, "::1": false,
	} {
		if got := bl.Blocked(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Blocked(%s) = %v, want %v", addr, got, want)
		}
	}
	var nilList *Blocklist
	if nilList.Blocked(netip.MustParseAddr("1.2.3.4")) {
		t.Error("a nil Blocklist blocks")
	}
	if r, ok := (ranger{bl}).Lookup(netip.MustParseAddr("1.2.3.4").AsSlice()); !ok || r.Description != "Bad people" {
		t.Errorf("ranger lookup = %v, %v", r, ok)
	}

	for name, tc := range map[string]struct {
		text string
		line string
	}{
		"no range":       {"ok:1.1.1.1-1.1.1.2\nno range here\n", "line 2"},
		"truncated":      {"a:1.1.1.1-1.1.1.2\nb:1.1.1.1-1.1.", "line 2"},
		"no dash":        {"# c\n\nname:1.1.1.1\n", "line 3"},
		"backwards":      {"name:1.1.1.9-1.1.1.1", "line 1"},
		"mixed families": {"name:1.1.1.1-::1", "line 1"},
		"bad octet":      {"name:1.1.1.256-1.1.1.257", "line 1"},
		"long line":      {"x:" + strings.Repeat("a", maxBlocklistLine) + "\n", "line 1"},
	} {
		_, err := ParseBlocklist(strings.NewReader(tc.text))
		if !errors.Is(err, ErrBlocklist) || !strings.Contains(err.Error(), tc.line) {
			t.Errorf("%s: error %v, want ErrBlocklist naming %s", name, err, tc.line)
		}
	}
}

func FuzzParseBlocklist(f *testing.F) {
	f.Add("# c\nname:1.2.3.0-1.2.3.255\nx:y:10.0.0.1-10.0.0.1\n")
	f.Add("v6:2001:db8::-2001:db8::ff\n")
	f.Add("a:1.1.1.1-1.1.")
	f.Fuzz(func(t *testing.T, s string) {
		bl, err := ParseBlocklist(strings.NewReader(s))
		if err != nil {
			if !strings.Contains(err.Error(), "line ") {
				t.Fatalf("error without a line number: %v", err)
			}
			return
		}
		// Merged ranges are ordered, disjoint and each blocks its ends.
		for i, r := range bl.ranges {
			if r.last.Less(r.first) {
				t.Fatalf("range %v-%v backwards", r.first, r.last)
			}
			if i > 0 && r.first.Is4() == bl.ranges[i-1].last.Is4() && !bl.ranges[i-1].last.Less(r.first) {
				t.Fatalf("ranges %d and %d overlap", i-1, i)
			}
			if !bl.Blocked(r.first) || !bl.Blocked(r.last) {
				t.Fatalf("range %v-%v does not block its ends", r.first, r.last)
			}
		}
	})
}

// infoBytes builds a bencoded v1 info dictionary over content.
func infoBytes(t testing.TB, content []byte, pieceLen int64, files ...metainfo.FileInfo) []byte {
	t.Helper()
	info := metainfo.Info{Name: "x", PieceLength: pieceLen, Files: files}
	if files == nil {
		info.Length = int64(len(content))
	}
	for off := int64(0); off < int64(len(content)); off += pieceLen {
		h := sha1.Sum(content[off:min(off+pieceLen, int64(len(content)))])
		info.Pieces = append(info.Pieces, h[:]...)
	}
	b, err := bencode.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVerifyInfoAndPieces(t *testing.T) {
	content := []byte(strings.Repeat("0123456789", 1000)) // 10000 bytes
	ib := infoBytes(t, content, 4096,
		metainfo.FileInfo{Path: []string{"a", "one.txt"}, Length: 3000},
		metainfo.FileInfo{Path: []string{"two.txt"}, Length: 7000})
	ih := InfoHash(sha1.Sum(ib))
	info, err := VerifyInfo(ih, ib)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPieces() != 3 || info.PieceSize(2) != 10000-8192 || info.TotalLength() != 10000 {
		t.Fatalf("layout: %d pieces, last %d, total %d", info.NumPieces(), info.PieceSize(2), info.TotalLength())
	}
	for i := range 3 {
		p := content[i*4096 : min((i+1)*4096, len(content))]
		if err := info.VerifyPiece(i, p); err != nil {
			t.Errorf("piece %d: %v", i, err)
		}
		tampered := append([]byte(nil), p...)
		tampered[len(tampered)/2] ^= 1
		if err := info.VerifyPiece(i, tampered); !errors.Is(err, ErrPieceHash) {
			t.Errorf("tampered piece %d: %v, want ErrPieceHash", i, err)
		}
		if err := info.VerifyPiece(i, p[:len(p)-1]); !errors.Is(err, ErrPieceLength) {
			t.Errorf("short piece %d: %v, want ErrPieceLength", i, err)
		}
	}
	if err := info.VerifyPiece(3, nil); !errors.Is(err, ErrPieceIndex) {
		t.Errorf("piece 3: %v, want ErrPieceIndex", err)
	}
	f, err := info.FileByPath("two.txt")
	if err != nil || f.Offset != 3000 || f.Length != 7000 || f.Index != 1 {
		t.Fatalf("FileByPath: %+v %v", f, err)
	}
	if first, end, err := info.PieceRange(f.Offset, f.Length); err != nil || first != 0 || end != 3 {
		t.Errorf("PieceRange(two.txt) = %d, %d, %v", first, end, err)
	}
	if first, end, _ := info.PieceRange(4096, 1); first != 1 || end != 2 {
		t.Errorf("PieceRange(4096, 1) = %d, %d", first, end)
	}
	if _, _, err := info.PieceRange(9000, 1001); err == nil {
		t.Error("PieceRange past the end accepted")
	}
	if _, err := info.FileByIndex(2); err == nil {
		t.Error("FileByIndex(2) accepted")
	}
	if _, err := info.FileByPath("nope"); err == nil {
		t.Error("FileByPath(nope) accepted")
	}

	// Any change to the info bytes breaks the hash.
	bad := append([]byte(nil), ib...)
	bad[len(bad)/2] ^= 1
	if _, err := VerifyInfo(ih, bad); !errors.Is(err, ErrInfoHashMismatch) {
		t.Errorf("tampered info: %v, want ErrInfoHashMismatch", err)
	}
	// Every truncation fails too, whether by hash or by decoding.
	for n := range len(ib) {
		if _, err := VerifyInfo(ih, ib[:n]); err == nil {
			t.Fatalf("truncated info of %d bytes accepted", n)
		}
		if _, err := decodeInfo(ih, ib[:n]); err == nil {
			t.Fatalf("truncated info of %d bytes decoded", n)
		}
	}
	// Layouts that hash correctly but make no sense are refused.
	for name, b := range map[string][]byte{
		"piece count":  infoBytes(t, content[:5000], 4096, metainfo.FileInfo{Path: []string{"a"}, Length: 10000}),
		"unsafe path":  infoBytes(t, content, 4096, metainfo.FileInfo{Path: []string{"..", "a"}, Length: 10000}),
		"zero piece":   []byte("d6:lengthi1e4:name1:x12:piece lengthi0e6:pieces20:01234567890123456789e"),
		"no pieces":    []byte("d6:lengthi1e4:name1:x12:piece lengthi1ee"),
		"trailing":     append(infoBytes(t, content, 4096), 'x'),
		"neg length":   []byte("d6:lengthi-1e4:name1:x12:piece lengthi1e6:pieces20:01234567890123456789e"),
		"not a dict":   []byte("i1e"),
		"empty string": nil,
	} {
		if _, err := VerifyInfo(InfoHash(sha1.Sum(b)), b); !errors.Is(err, ErrBadInfo) {
			t.Errorf("%s: %v, want ErrBadInfo", name, err)
		}
	}
}

func FuzzVerifyInfo(f *testing.F) {
	content := []byte(strings.Repeat("abc", 3000))
	f.Add(infoBytes(f, content, 1024))
	f.Add(infoBytes(f, content, 4096, metainfo.FileInfo{Path: []string{"d", "f"}, Length: 9000}))
	f.Add([]byte("d6:lengthi1e4:name1:x12:piece lengthi1e6:pieces20:01234567890123456789e"))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := VerifyInfo(InfoHash(sha1.Sum(b)), b)
		if err != nil {
			return
		}
		// An accepted layout is consistent: files tile the content and the
		// pieces cover it exactly.
		var off int64
		for _, fl := range info.Files() {
			if fl.Offset != off || fl.Length < 0 {
				t.Fatalf("file %+v at %d", fl, off)
			}
			off += fl.Length
		}
		if off != info.TotalLength() {
			t.Fatalf("files sum to %d, total %d", off, info.TotalLength())
		}
		var sum int64
		for i := range info.NumPieces() {
			sum += info.PieceSize(i)
		}
		if sum != info.TotalLength() {
			t.Fatalf("pieces sum to %d, total %d", sum, info.TotalLength())
		}
		_ = info.VerifyPiece(0, nil)
	})
}
