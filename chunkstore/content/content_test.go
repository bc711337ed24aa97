package content

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"math/rand/v2"
	"testing"

	"veil/proto"
)

func testKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// static is a published static content, as tests need it.
type static struct {
	data   []byte
	chunks [][]byte
	tree   MemTree
	d      proto.DBConnected
	name   proto.HashName
}

func newStatic(t testing.TB, size int, seed uint64) static {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	s := static{data: randBytes(r, size)}
	for off := 0; off < size; off += ChunkSize {
		c := s.data[off:min(off+ChunkSize, size)]
		s.chunks = append(s.chunks, c)
		s.tree = append(s.tree, LeafHash(c))
	}
	d, err := NewDescriptor(testKey(1), uint64(size), "video/mp4", s.tree.Root(), 1_700_000_000)
	if err != nil {
		t.Fatal(err)
	}
	s.d, s.name = d, HashNameOf(d)
	return s
}

func (s static) rangeOf(t testing.TB, lo, hi uint64) Range {
	t.Helper()
	hs, err := BuildProof(uint64(len(s.tree)), lo, hi, s.tree.Node)
	if err != nil {
		t.Fatalf("BuildProof [%d,%d): %v", lo, hi, err)
	}
	return Range{Start: lo, Chunks: s.chunks[lo:hi], Proof: Proof{Hashes: hs}}
}

func TestBuilderMatchesRootOf(t *testing.T) {
	for n := 0; n <= 300; n++ {
		var leaves MemTree
		for i := 0; i < n; i++ {
			leaves = append(leaves, LeafHash([]byte{byte(i), byte(i >> 8)}))
		}
		var kept []Node
		b := Builder{KeepSpan: 4, OnNode: func(nd Node) { kept = append(kept, nd) }}
		for _, l := range leaves {
			b.Append(l)
		}
		if got, want := b.Root(), RootOf(leaves); got != want {
			t.Fatalf("n=%d: builder root %v, RootOf %v", n, got, want)
		}
		for _, nd := range kept {
			want, err := leaves.Node(nd.A, nd.B)
			if err != nil || want != nd.Hash || nd.Span() < 4 {
				t.Fatalf("n=%d: kept node [%d,%d) wrong (err %v)", n, nd.A, nd.B, err)
			}
		}
		if n >= 4 && len(kept) == 0 {
			t.Fatalf("n=%d: no node kept", n)
		}
	}
}

func TestEmptyAndRoots(t *testing.T) {
	if RootOf(nil) != EmptyRoot {
		t.Fatal("empty root")
	}
	// Domain separation: a leaf over 64 bytes never equals a parent.
	l, r := LeafHash([]byte("a")), LeafHash([]byte("b"))
	var cat []byte
	cat = append(append(cat, l[:]...), r[:]...)
	if LeafHash(cat) == ParentHash(l, r) {
		t.Fatal("leaf and parent collide")
	}
	if LeafHash([]byte("x")) == LiveLeafHash(0, []byte("x")) {
		t.Fatal("static and live leaves collide")
	}
}

// TestRangeShapes proves and verifies every range of small contents and
// the notable shapes (first, last, single, whole) of odd-sized larger ones.
func TestRangeShapes(t *testing.T) {
	sizes := []int{1, 2, 497, 498, 499, 996, 997, 3*498 + 1, 7*498 + 5, 17 * 498, 33*498 - 1, 64*498 + 3}
	for _, size := range sizes {
		s := newStatic(t, size, uint64(size))
		n := uint64(len(s.chunks))
		for lo := uint64(0); lo < n; lo++ {
			for hi := lo + 1; hi <= n; hi++ {
				r := s.rangeOf(t, lo, hi)
				if _, err := Verify(s.d, s.name, r, 2); err != nil {
					t.Fatalf("size %d [%d,%d): %v", size, lo, hi, err)
				}
			}
		}
	}
	for _, size := range []int{1000*498 + 17, 4097 * 498} {
		s := newStatic(t, size, 9)
		n := uint64(len(s.chunks))
		shapes := [][2]uint64{{0, 1}, {n - 1, n}, {0, n}, {n / 2, n/2 + 1}, {1, n - 1}, {3, 203}, {n - 200, n}, {0, 200}, {511, 513}}
		for _, sh := range shapes {
			r := s.rangeOf(t, sh[0], sh[1])
			v, err := Verify(s.d, s.name, r, 64)
			if err != nil {
				t.Fatalf("size %d %v: %v", size, sh, err)
			}
			for _, nd := range v.Nodes {
				if want, _ := s.tree.Node(nd.A, nd.B); want != nd.Hash {
					t.Fatalf("learned node [%d,%d) is wrong", nd.A, nd.B)
				}
			}
		}
	}
}

func TestEmptyContent(t *testing.T) {
	s := newStatic(t, 0, 1)
	if len(s.chunks) != 0 || RootOfDescriptor(s.d) != EmptyRoot {
		t.Fatal("empty content has chunks or a non-empty root")
	}
	if err := CheckDescriptor(s.d); err != nil {
		t.Fatal(err)
	}
	_, err := Verify(s.d, s.name, Range{Start: 0, Chunks: [][]byte{{1}}}, 2)
	if !errors.Is(err, ErrBadRange) {
		t.Fatalf("chunk of an empty content: %v", err)
	}
	if _, err := BuildProof(0, 0, 0, MemTree(nil).Node); !errors.Is(err, ErrBadRange) {
		t.Fatalf("empty range: %v", err)
	}
}

func TestBadRanges(t *testing.T) {
	s := newStatic(t, 10*498, 2)
	for _, sh := range [][2]uint64{{0, 0}, {5, 5}, {3, 2}, {0, 11}, {10, 11}} {
		if _, err := BuildProof(10, sh[0], sh[1], s.tree.Node); !errors.Is(err, ErrBadRange) {
			t.Errorf("%v: %v", sh, err)
		}
	}
	r := s.rangeOf(t, 2, 5)
	r.Chunks = nil
	if _, err := Verify(s.d, s.name, r, 2); !errors.Is(err, ErrBadRange) {
		t.Errorf("empty range verified: %v", err)
	}
}

// TestTamper flips one bit at a time in every input and expects an error.
func TestTamper(t *testing.T) {
	s := newStatic(t, 50*498+100, 3)
	good := s.rangeOf(t, 7, 31)
	if _, err := Verify(s.d, s.name, good, 2); err != nil {
		t.Fatal(err)
	}
	clone := func(r Range) Range {
		c := r
		c.Chunks = make([][]byte, len(r.Chunks))
		for i := range r.Chunks {
			c.Chunks[i] = bytes.Clone(r.Chunks[i])
		}
		c.Proof.Hashes = append([]Hash(nil), r.Proof.Hashes...)
		return c
	}
	for k := 0; k < len(good.Chunks); k++ {
		for bit := 0; bit < len(good.Chunks[k])*8; bit += 97 {
			r := clone(good)
			r.Chunks[k][bit/8] ^= 1 << (bit % 8)
			if _, err := Verify(s.d, s.name, r, 2); !errors.Is(err, ErrRootMismatch) {
				t.Fatalf("data bit %d of chunk %d: %v", bit, k, err)
			}
		}
	}
	for k := range good.Proof.Hashes {
		for bit := 0; bit < 256; bit += 31 {
			r := clone(good)
			r.Proof.Hashes[k][bit/8] ^= 1 << (bit % 8)
			if _, err := Verify(s.d, s.name, r, 2); !errors.Is(err, ErrRootMismatch) {
				t.Fatalf("proof bit %d of hash %d: %v", bit, k, err)
			}
		}
	}
	// Proof too short, too long, chunk moved.
	r := clone(good)
	r.Proof.Hashes = r.Proof.Hashes[1:]
	if _, err := Verify(s.d, s.name, r, 2); err == nil {
		t.Fatal("short proof accepted")
	}
	r = clone(good)
	r.Proof.Hashes = append(r.Proof.Hashes, Hash{})
	if _, err := Verify(s.d, s.name, r, 2); !errors.Is(err, ErrProofLong) {
		t.Fatalf("long proof: %v", err)
	}
	r = clone(good)
	r.Start++
	if _, err := Verify(s.d, s.name, r, 2); err == nil {
		t.Fatal("shifted range accepted")
	}
	// Descriptor: every bit of its encoding.
	enc := s.d.Append(nil)
	for bit := 0; bit < len(enc)*8; bit++ {
		b := bytes.Clone(enc)
		b[bit/8] ^= 1 << (bit % 8)
		d, err := proto.ParseDBConnected(b)
		if err != nil {
			continue // proto already refuses it
		}
		if err := CheckDescriptor(d); err == nil {
			t.Fatalf("descriptor bit %d flipped: still valid", bit)
		}
		if HashNameOf(d) == s.name {
			t.Fatalf("descriptor bit %d flipped: same hash_name", bit)
		}
	}
}

func TestDescriptorKinds(t *testing.T) {
	s := newStatic(t, 1, 4)
	if s.d.Size != 1 || len(s.d.Root) != HashSize {
		t.Fatal("one-byte descriptor")
	}
	live, err := NewLiveDescriptor(testKey(2), "video/webm", 5)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckDescriptor(live); err != nil {
		t.Fatal(err)
	}
	// A static proof for live content and the reverse are refused.
	if _, err := Verify(live, HashNameOf(live), s.rangeOf(t, 0, 1), 2); !errors.Is(err, ErrKindMismatch) {
		t.Fatalf("static proof on live: %v", err)
	}
	r := s.rangeOf(t, 0, 1)
	r.Proof.Live = true
	if _, err := Verify(s.d, s.name, r, 2); !errors.Is(err, ErrKindMismatch) {
		t.Fatalf("live proof on static: %v", err)
	}
}

// TestProofSizeBound measures the worst proofs for contents up to 4 GB and
// MaxChunks: every one must fit DB_PROOF's MaxProofSize.
func TestProofSizeBound(t *testing.T) {
	zero := func(a, b uint64) (Hash, error) { return Hash{}, nil }
	rnd := rand.New(rand.NewPCG(7, 7))
	for _, n := range []uint64{1, 2, 3, 1000, 1<<20 + 1, (4 << 30) / ChunkSize, 1<<30 - 1, MaxChunks} {
		worst := 0
		try := func(lo, hi uint64) {
			hs, err := BuildProof(n, lo, hi, zero)
			if err != nil {
				t.Fatal(err)
			}
			worst = max(worst, len(hs))
		}
		try(0, n)
		try(0, 1)
		try(n-1, n)
		if n > 2 {
			try(1, n-1) // both boundaries as deep as they go
		}
		for i := 0; i < 300; i++ {
			lo := rnd.Uint64N(n)
			try(lo, lo+1+rnd.Uint64N(min(n-lo, 400)))
			// Ranges straddling the middle of a deep tree are the worst.
			if n > 4 {
				mid := split(n)
				try(mid-1-rnd.Uint64N(min(mid, 200)), mid+1)
			}
		}
		p := Proof{Live: true, Hashes: make([]Hash, worst)}
		if worst > MaxProofHashes || p.Len() > MaxProofSize {
			t.Fatalf("n=%d: worst proof %d hashes, %d bytes", n, worst, p.Len())
		}
		if n == (4<<30)/ChunkSize {
			t.Logf("4 GB (%d chunks): worst proof seen %d hashes, %d bytes live", n, worst, p.Len())
		}
	}
}

func TestResumeBuilder(t *testing.T) {
	for n := 0; n < 200; n++ {
		var full Builder
		var leaves MemTree
		for i := 0; i < n; i++ {
			l := LeafHash([]byte{byte(i)})
			full.Append(l)
			leaves = append(leaves, l)
		}
		var peaks []Node
		for _, sp := range PeakSpans(uint64(n)) {
			h, _ := leaves.Node(sp[0], sp[1])
			peaks = append(peaks, Node{A: sp[0], B: sp[1], Hash: h})
		}
		b, err := ResumeBuilder(peaks, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 7; i++ {
			l := LeafHash([]byte{0xff, byte(i)})
			full.Append(l)
			b.Append(l)
		}
		if b.Root() != full.Root() || b.Len() != full.Len() {
			t.Fatalf("n=%d: resumed tree differs", n)
		}
	}
	for _, bad := range [][]Node{
		{{A: 1, B: 2}},
		{{A: 0, B: 3}},
		{{A: 0, B: 2}, {A: 2, B: 4}},
	} {
		if _, err := ResumeBuilder(bad, 0, nil); !errors.Is(err, ErrBadRange) {
			t.Fatalf("bad peaks %v: %v", bad, err)
		}
	}
}
