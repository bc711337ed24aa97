package chunkstore

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"veil/chunkstore/content"
	"veil/proto"
)

func testKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func openTest(t testing.TB, path string, edit func(*Config)) *Store {
	t.Helper()
	cfg := DefaultConfig(path)
	if edit != nil {
		edit(&cfg)
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// liveStores opens a publisher's store and a subscriber's (edit, if not
// nil, sets both configs), starts a live stream at the first with the
// key testKey(key), and gives the second its descriptor.
func liveStores(t *testing.T, key byte, mime string, edit func(*Config)) (pubS, subS *Store, pub *LivePublisher, name proto.HashName) {
	t.Helper()
	pubS = openTest(t, filepath.Join(t.TempDir(), "p.db"), edit)
	subS = openTest(t, filepath.Join(t.TempDir(), "s.db"), edit)
	pub, err := pubS.NewLivePublisher(testKey(key), mime, 1000)
	if err != nil {
		t.Fatal(err)
	}
	name = pub.Name()
	d, _ := pubS.Descriptor(name)
	if _, err := subS.PutDescriptor(d); err != nil {
		t.Fatal(err)
	}
	return pubS, subS, pub, name
}

// fixture is a static content with its whole tree, as a publisher has it.
type fixture struct {
	data   []byte
	chunks [][]byte
	tree   content.MemTree
	nodes  map[[2]uint64]content.Hash // every node of the tree
	d      proto.DBConnected
	name   proto.HashName
}

func newFixture(t testing.TB, size int, seed uint64) *fixture {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 3))
	f := &fixture{data: make([]byte, size), nodes: make(map[[2]uint64]content.Hash)}
	for i := 0; i < size; i += 8 {
		v := r.Uint64()
		for k := i; k < min(i+8, size); k++ {
			f.data[k] = byte(v >> (8 * (k - i)))
		}
	}
	for off := 0; off < size; off += content.ChunkSize {
		c := f.data[off:min(off+content.ChunkSize, size)]
		f.chunks = append(f.chunks, c)
		f.tree = append(f.tree, content.LeafHash(c))
	}
	var walk func(a, b uint64) content.Hash
	walk = func(a, b uint64) content.Hash {
		h := f.tree[a]
		if b-a > 1 {
			k := content.Split(b - a)
			h = content.ParentHash(walk(a, a+k), walk(a+k, b))
		}
		f.nodes[[2]uint64{a, b}] = h
		return h
	}
	root := content.EmptyRoot
	if len(f.tree) > 0 {
		root = walk(0, uint64(len(f.tree)))
	}
	d, err := content.NewDescriptor(testKey(1), uint64(size), "application/octet-stream", root, 1_700_000_000)
	if err != nil {
		t.Fatal(err)
	}
	f.d, f.name = d, content.HashNameOf(d)
	return f
}

func (f *fixture) rng(t testing.TB, lo, hi uint64) content.Range {
	t.Helper()
	hs, err := content.BuildProof(uint64(len(f.chunks)), lo, hi, f.node)
	if err != nil {
		t.Fatal(err)
	}
	return content.Range{Start: lo, Chunks: f.chunks[lo:hi], Proof: content.Proof{Hashes: hs}}
}

func (f *fixture) node(a, b uint64) (content.Hash, error) {
	h, ok := f.nodes[[2]uint64{a, b}]
	if !ok {
		return h, content.ErrNoNode
	}
	return h, nil
}

func readAll(t testing.TB, s *Store, name proto.HashName) []byte {
	t.Helper()
	r, err := s.NewReader(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestIngestShuffledWindows(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	var quarters []int
	s := openTest(t, filepath.Join(t.TempDir(), "s.db"), func(c *Config) {
		c.BatchBytes = 20 * content.ChunkSize // several commits
		c.OnProgress = func(_ proto.HashName, p int) { mu.Lock(); quarters = append(quarters, p); mu.Unlock() }
	})
	f := newFixture(t, 300*content.ChunkSize+123, 1)
	if _, err := s.PutDescriptor(f.d); err != nil {
		t.Fatal(err)
	}
	n := uint64(len(f.chunks))
	var starts []uint64
	for lo := uint64(0); lo < n; lo += 37 {
		starts = append(starts, lo)
	}
	rand.New(rand.NewPCG(4, 4)).Shuffle(len(starts), func(i, j int) { starts[i], starts[j] = starts[j], starts[i] })
	for k, lo := range starts {
		if err := s.Ingest(ctx, f.name, f.rng(t, lo, min(lo+37, n))); err != nil {
			t.Fatal(err)
		}
		if k == 0 { // a range ingested twice is stored once
			if err := s.Ingest(ctx, f.name, f.rng(t, lo, min(lo+37, n))); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := readAll(t, s, f.name); !bytes.Equal(got, f.data) {
		t.Fatal("read back differs")
	}
	p, count, err := s.Progress(f.name)
	if err != nil || p != 3 || count != n {
		t.Fatalf("progress %d count %d err %v", p, count, err)
	}
	mu.Lock()
	if len(quarters) == 0 || quarters[len(quarters)-1] != 3 {
		t.Fatalf("quarters reported %v", quarters)
	}
	for i := 1; i < len(quarters); i++ {
		if quarters[i] <= quarters[i-1] {
			t.Fatalf("quarters not increasing: %v", quarters)
		}
	}
	mu.Unlock()
	if checked, err := s.Check(f.name); err != nil || checked != n {
		t.Fatalf("check: %d %v", checked, err)
	}
	c, st, err := s.Chunk(f.name, n-1)
	if err != nil || !bytes.Equal(c, f.chunks[n-1]) || st != content.StaticStamp(f.d) {
		t.Fatalf("last chunk: %v", err)
	}
	// The store proves any range to others, and the proof verifies.
	for _, sh := range [][2]uint64{{0, 1}, {n - 1, n}, {0, n}, {5, 205}, {63, 65}, {100, 101}} {
		pr, err := s.Proof(f.name, sh[0], sh[1])
		if err != nil {
			t.Fatal(err)
		}
		r := content.Range{Start: sh[0], Chunks: f.chunks[sh[0]:sh[1]], Proof: pr}
		if _, err := content.Verify(f.d, f.name, r, 0); err != nil {
			t.Fatalf("store proof %v: %v", sh, err)
		}
	}
}

// TestPartialHolderServes: a peer holding a few windows proves exactly
// those to another peer, from the nodes it learned.
func TestPartialHolderServes(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 5000*content.ChunkSize+7, 2)
	a := openTest(t, filepath.Join(t.TempDir(), "a.db"), nil)
	b := openTest(t, filepath.Join(t.TempDir(), "b.db"), nil)
	for _, s := range []*Store{a, b} {
		if _, err := s.PutDescriptor(f.d); err != nil {
			t.Fatal(err)
		}
	}
	for _, lo := range []uint64{1000, 1200, 1400, 4801} {
		if err := a.Ingest(ctx, f.name, f.rng(t, lo, min(lo+200, 5001))); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, sh := range [][2]uint64{{1000, 1600}, {1100, 1300}, {1399, 1401}, {4801, 5001}, {5000, 5001}} {
		pr, err := a.Proof(f.name, sh[0], sh[1])
		if err != nil {
			t.Fatalf("partial holder proof %v: %v", sh, err)
		}
		var chunks [][]byte
		for i := sh[0]; i < sh[1]; i++ {
			c, _, err := a.Chunk(f.name, i)
			if err != nil {
				t.Fatal(err)
			}
			chunks = append(chunks, c)
		}
		if err := b.Ingest(ctx, f.name, content.Range{Start: sh[0], Chunks: chunks, Proof: pr}); err != nil {
			t.Fatalf("%v: %v", sh, err)
		}
	}
	if _, err := a.Proof(f.name, 0, 10); !errors.Is(err, content.ErrNoNode) {
		t.Fatalf("proof of chunks not held: %v", err)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, count, _ := b.Progress(f.name); count != 800 {
		t.Fatalf("b holds %d chunks, want 800", count)
	}
	if _, err := b.Check(f.name); err != nil {
		t.Fatal(err)
	}
}

// TestTamperStoresNothing flips bits in data, proof, descriptor and
// signature: every attempt fails with a clear error and nothing is stored.
func TestTamperStoresNothing(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "s.db"), nil)
	f := newFixture(t, 90*content.ChunkSize+1, 3)
	// Descriptor: every bit of its encoding.
	enc := f.d.Append(nil)
	for bit := 0; bit < len(enc)*8; bit++ {
		b := bytes.Clone(enc)
		b[bit/8] ^= 1 << (bit % 8)
		d, err := proto.ParseDBConnected(b)
		if err != nil {
			continue
		}
		if _, err := s.PutDescriptor(d); err == nil {
			t.Fatalf("descriptor with bit %d flipped stored", bit)
		}
	}
	if names, _ := s.Names(); len(names) != 0 {
		t.Fatalf("tampered descriptors stored: %v", names)
	}
	if _, err := s.PutDescriptor(f.d); err != nil {
		t.Fatal(err)
	}
	good := f.rng(t, 10, 80)
	for trial := 0; trial < 200; trial++ {
		r := good
		r.Chunks = append([][]byte(nil), good.Chunks...)
		r.Proof.Hashes = append([]content.Hash(nil), good.Proof.Hashes...)
		if trial%2 == 0 {
			k := trial % len(r.Chunks)
			c := bytes.Clone(r.Chunks[k])
			c[(trial*7)%len(c)] ^= 1 << (trial % 8)
			r.Chunks[k] = c
		} else {
			k := trial % len(r.Proof.Hashes)
			r.Proof.Hashes[k][trial%32] ^= 1 << (trial % 8)
		}
		// Through the wire form too: the proof bytes as DB_PROOF carries them.
		p, err := content.ParseProof(r.Proof.Append(nil))
		if err != nil {
			t.Fatal(err)
		}
		r.Proof = p
		if err := s.Ingest(ctx, f.name, r); !errors.Is(err, content.ErrRootMismatch) {
			t.Fatalf("trial %d: %v", trial, err)
		}
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if have, _ := s.Have(f.name); len(have) != 0 {
		t.Fatalf("tampered chunks stored: %x", have)
	}
	if _, count, _ := s.Progress(f.name); count != 0 {
		t.Fatalf("count %d", count)
	}
	// Each refused range is counted, and a good one is not.
	if st := s.Stats(); st.VerifyFailures != 200 {
		t.Fatalf("Stats().VerifyFailures = %d after 200 tampered ranges", st.VerifyFailures)
	}
	if err := s.Ingest(ctx, f.name, good); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.VerifyFailures != 200 {
		t.Fatalf("Stats().VerifyFailures = %d after a good range", st.VerifyFailures)
	}
	if _, _, err := s.Chunk(f.name, 10); !errors.Is(err, ErrMissing) {
		t.Fatalf("chunk: %v", err)
	}
}

func TestTinyContents(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "s.db"), nil)
	for _, size := range []int{0, 1, content.ChunkSize - 1, content.ChunkSize, content.ChunkSize + 1} {
		f := newFixture(t, size, uint64(size))
		if _, err := s.PutDescriptor(f.d); err != nil {
			t.Fatal(err)
		}
		if size > 0 {
			if err := s.Ingest(ctx, f.name, f.rng(t, 0, uint64(len(f.chunks)))); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, s, f.name); !bytes.Equal(got, f.data) {
			t.Fatalf("size %d: read %d bytes", size, len(got))
		}
		if p, _, _ := s.Progress(f.name); p != 3 {
			t.Fatalf("size %d: progress %d", size, p)
		}
	}
}

func TestReaderSemantics(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "s.db"), nil)
	f := newFixture(t, 200*content.ChunkSize+50, 5)
	if _, err := s.PutDescriptor(f.d); err != nil {
		t.Fatal(err)
	}
	if err := s.Ingest(ctx, f.name, f.rng(t, 0, 100)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := s.NewReader(ctx, f.name)
	if err != nil {
		t.Fatal(err)
	}
	// Seek: every whence, and refusals.
	for _, c := range []struct {
		off    int64
		whence int
		want   int64
	}{{1000, io.SeekStart, 1000}, {-10, io.SeekCurrent, 990}, {-50, io.SeekEnd, int64(len(f.data)) - 50}, {0, io.SeekStart, 0}} {
		got, err := r.Seek(c.off, c.whence)
		if err != nil || got != c.want {
			t.Fatalf("Seek(%d,%d) = %d, %v", c.off, c.whence, got, err)
		}
	}
	if _, err := r.Seek(-1, io.SeekStart); !errors.Is(err, ErrSeek) {
		t.Fatalf("negative seek: %v", err)
	}
	if _, err := r.Seek(0, 7); !errors.Is(err, ErrSeek) {
		t.Fatalf("bad whence: %v", err)
	}
	buf := make([]byte, 777)
	if _, err := r.Seek(12345, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(r, buf); err != nil || !bytes.Equal(buf, f.data[12345:12345+777]) {
		t.Fatalf("read after seek: %v", err)
	}
	// Past the end: EOF. At the end of what is held: wait, then cancel.
	if _, err := r.Seek(0, io.SeekEnd); err != nil {
		t.Fatal(err)
	}
	if n, err := r.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read at end: %d %v", n, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	wr, _ := s.NewReader(cctx, f.name)
	wr.Seek(150*content.ChunkSize, io.SeekStart)
	errc := make(chan error, 1)
	go func() { _, err := wr.Read(buf); errc <- err }()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled read: %v", err)
	}
	// A reader waiting for missing chunks gets them when they arrive.
	wr, _ = s.NewReader(ctx, f.name)
	done := make(chan []byte, 1)
	go func() {
		b, err := io.ReadAll(wr)
		if err != nil {
			t.Error(err)
		}
		done <- b
	}()
	for lo := uint64(100); lo < 201; lo += 20 {
		if err := s.Ingest(ctx, f.name, f.rng(t, lo, min(lo+20, 201))); err != nil {
			t.Fatal(err)
		}
	}
	if got := <-done; !bytes.Equal(got, f.data) {
		t.Fatal("waiting reader read wrong bytes")
	}
	// Deleting the content wakes a waiting reader.
	g := newFixture(t, 10*content.ChunkSize, 6)
	s.PutDescriptor(g.d)
	gr, _ := s.NewReader(ctx, g.name)
	go func() { _, err := gr.Read(buf); errc <- err }()
	if err := s.Delete(g.name); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrNotFound) {
		t.Fatalf("read of deleted content: %v", err)
	}
}

func TestDelete(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "s.db"), nil)
	f := newFixture(t, 70*content.ChunkSize, 7)
	s.PutDescriptor(f.d)
	if err := s.Ingest(ctx, f.name, f.rng(t, 0, 70)); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(f.name); err != nil { // may race the queued range: it must be dropped
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Descriptor(f.name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted descriptor: %v", err)
	}
	if err := s.Ingest(ctx, f.name, f.rng(t, 0, 1)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ingest into deleted content: %v", err)
	}
	if err := s.Delete(f.name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	// Re-adding starts empty.
	s.PutDescriptor(f.d)
	s.Flush(ctx)
	if have, _ := s.Have(f.name); len(have) != 0 {
		t.Fatalf("re-added content has chunks %x", have)
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	openTest(t, path, nil)
	cfg := DefaultConfig(path)
	cfg.LockTimeout = 100 * time.Millisecond
	if _, err := Open(cfg); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig("x").Validate(); err != nil {
		t.Fatal(err)
	}
	for _, edit := range []func(*Config){
		func(c *Config) { c.Path = "" },
		func(c *Config) { c.LockTimeout = 0 },
		func(c *Config) { c.BatchBytes = 1 },
		func(c *Config) { c.QueueLen = 0 },
		func(c *Config) { c.WindowBytes = 0 },
		func(c *Config) { c.BatchDelay = -1 },
	} {
		c := DefaultConfig("x")
		edit(&c)
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Fatalf("bad config accepted: %+v", c)
		}
	}
}

func TestPublishThenServe(t *testing.T) {
	ctx := context.Background()
	pub := openTest(t, filepath.Join(t.TempDir(), "p.db"), func(c *Config) { c.BatchBytes = 100_000 })
	data := newFixture(t, 3000*content.ChunkSize+99, 8).data
	d, name, err := pub.Publish(ctx, testKey(2), "video/mp4", 42, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if d.Size != uint64(len(data)) || content.HashNameOf(d) != name {
		t.Fatal("descriptor")
	}
	if got := readAll(t, pub, name); !bytes.Equal(got, data) {
		t.Fatal("published bytes differ")
	}
	if n, err := pub.Check(name); err != nil || n != 3001 {
		t.Fatalf("check: %d %v", n, err)
	}
	sub := openTest(t, filepath.Join(t.TempDir(), "s.db"), nil)
	if _, err := sub.PutDescriptor(d); err != nil {
		t.Fatal(err)
	}
	for lo := uint64(0); lo < 3001; lo += 200 {
		hi := min(lo+200, 3001)
		pr, err := pub.Proof(name, lo, hi)
		if err != nil {
			t.Fatal(err)
		}
		r := content.Range{Start: lo, Proof: pr}
		for i := lo; i < hi; i++ {
			c, _, err := pub.Chunk(name, i)
			if err != nil {
				t.Fatal(err)
			}
			r.Chunks = append(r.Chunks, c)
		}
		if err := sub.Ingest(ctx, name, r); err != nil {
			t.Fatal(err)
		}
	}
	if got := readAll(t, sub, name); !bytes.Equal(got, data) {
		t.Fatal("subscriber bytes differ")
	}
}

// TestPublishInterrupted: a publication cancelled midway leaves nothing.
func TestPublishInterrupted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	s := openTest(t, path, func(c *Config) { c.BatchBytes = 10_000 })
	ctx, cancel := context.WithCancel(context.Background())
	src := io.MultiReader(bytes.NewReader(make([]byte, 200_000)), readerFunc(func([]byte) (int, error) {
		cancel()
		return 0, errors.New("disk gone")
	}))
	if _, _, err := s.Publish(ctx, testKey(3), "text/plain", 1, src); err == nil {
		t.Fatal("publish of a failing reader succeeded")
	}
	if names, _ := s.Names(); len(names) != 0 {
		t.Fatalf("names %v", names)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func TestLiveStreamEviction(t *testing.T) {
	ctx := context.Background()
	window := 16 * content.ChunkSize // keeps 64 chunks
	pubS, subS, pub, name := liveStores(t, 4, "video/webm", func(c *Config) { c.WindowBytes = window })
	rnd := rand.New(rand.NewPCG(9, 9))
	var all []byte
	next := uint64(0)
	for step := 0; step < 40; step++ {
		p := make([]byte, 1+rnd.IntN(3000))
		for i := range p {
			p[i] = byte(rnd.Uint32())
		}
		all = append(all, p...)
		head, err := pub.Append(ctx, uint32(2000+step), p)
		if err != nil {
			t.Fatal(err)
		}
		// The subscriber fetches what is new from the publisher's store.
		if head.Length > next {
			if err := pubS.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			pr, err := pubS.Proof(name, next, head.Length)
			if err != nil {
				t.Fatal(err)
			}
			r := content.Range{Start: next, Proof: pr}
			for i := next; i < head.Length; i++ {
				c, st, err := pubS.Chunk(name, i)
				if err != nil {
					t.Fatal(err)
				}
				r.Chunks, r.Times = append(r.Chunks, c), append(r.Times, st.Timestamp)
			}
			if err := subS.Ingest(ctx, name, r); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			// A forged timestamp is refused.
			r.Times = append([]uint32(nil), r.Times...)
			r.Times[0]--
			if err := subS.Ingest(ctx, name, r); !errors.Is(err, content.ErrRootMismatch) {
				t.Fatalf("forged timestamp: %v", err)
			}
			next = head.Length
		}
	}
	for _, s := range []*Store{pubS, subS} {
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		head, _ := s.Head(name)
		if head.Length != next {
			t.Fatalf("head %d, want %d", head.Length, next)
		}
		_, count, _ := s.Progress(name)
		if count > 64+GroupChunks || count < 64 {
			t.Fatalf("live stream holds %d chunks of %d", count, next)
		}
		if _, _, err := s.Chunk(name, 0); !errors.Is(err, ErrMissing) {
			t.Fatalf("old chunk not evicted: %v", err)
		}
		if n, err := s.Check(name); err != nil || n != count {
			t.Fatalf("check: %d %v", n, err)
		}
		// The newest chunks read back in order; old ones are gone.
		r, _ := s.NewReader(ctx, name)
		if _, err := r.Read(make([]byte, 10)); !errors.Is(err, ErrEvicted) {
			t.Fatalf("read of evicted chunk: %v", err)
		}
		off := int64(next-32) * content.ChunkSize
		r.Seek(off, io.SeekStart)
		got := make([]byte, 32*content.ChunkSize)
		if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, all[off:off+int64(len(got))]) {
			t.Fatalf("live tail: %v", err)
		}
	}
	// The publisher's key signs another stream of the same length: a fork.
	head, _ := subS.Head(name)
	var leaves content.MemTree
	w := content.NewLiveWriter(testKey(4), name, KeepSpan, nil)
	zero := make([]byte, content.ChunkSize)
	for w.Len() < head.Length {
		l, _ := w.Append(7, zero)
		leaves = append(leaves, l)
	}
	hs, err := content.BuildProof(head.Length, head.Length-1, head.Length, leaves.Node)
	if err != nil {
		t.Fatal(err)
	}
	r := content.Range{Start: head.Length - 1, Chunks: [][]byte{zero}, Times: []uint32{7}, Proof: content.Proof{Live: true, Head: w.Head(9), Hashes: hs}}
	if err := subS.Ingest(ctx, name, r); !errors.Is(err, ErrForked) {
		t.Fatalf("forked head: %v", err)
	}
}

// TestWritesAreBatched: ranges share transactions, a flush commits the
// rest, and nothing queued is visible before its commit.
func TestWritesAreBatched(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "s.db"), func(c *Config) {
		c.BatchBytes = 10 * 20 * content.ChunkSize // ten 20-chunk ranges
		c.BatchDelay = time.Hour                   // only size and Flush commit
	})
	f := newFixture(t, 1000*content.ChunkSize, 12)
	s.PutDescriptor(f.d)
	for lo := uint64(0); lo < 45*20; lo += 20 {
		if err := s.Ingest(ctx, f.name, f.rng(t, lo, lo+20)); err != nil {
			t.Fatal(err)
		}
		if lo == 5*20 {
			if have, _ := s.Have(f.name); len(have) != 0 {
				t.Fatal("chunks visible before their batch committed")
			}
		}
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.commits.Load(); got != 5 { // 4 full batches + the flush
		t.Fatalf("%d commits for 45 ranges, want 5", got)
	}
	if _, count, _ := s.Progress(f.name); count != 900 {
		t.Fatalf("count %d", count)
	}
}

// TestResumeLivePublisher: a publisher restarts and its stream goes on,
// even with the old chunks evicted.
func TestResumeLivePublisher(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "p.db")
	small := func(c *Config) { c.WindowBytes = 16 * content.ChunkSize } // keeps 64 chunks
	s := openTest(t, path, small)
	pub, err := s.NewLivePublisher(testKey(6), "video/webm", 1)
	if err != nil {
		t.Fatal(err)
	}
	name := pub.Name()
	rnd := rand.New(rand.NewPCG(3, 3))
	chunk := func(n int) []byte {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rnd.Uint32())
		}
		return p
	}
	for i := 0; i < 37; i++ {
		if _, err := pub.Append(ctx, uint32(i), chunk(1+rnd.IntN(4000))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Head(name)
	if _, _, err := s.Chunk(name, 0); !errors.Is(err, ErrMissing) || before.Length < 128 {
		t.Fatalf("want old chunks evicted before the restart (head %d): %v", before.Length, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, path, small)
	if _, err := s.ResumeLivePublisher(testKey(7), name); !errors.Is(err, content.ErrBadSignature) {
		t.Fatalf("resume with another key: %v", err)
	}
	pub, err = s.ResumeLivePublisher(testKey(6), name)
	if err != nil {
		t.Fatal(err)
	}
	head, err := pub.Append(ctx, 100, chunk(5*content.ChunkSize))
	if err != nil {
		t.Fatal(err)
	}
	if head.Length != before.Length+5 {
		t.Fatalf("head %d after resuming at %d", head.Length, before.Length)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Check(name); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Proof(name, head.Length-70, head.Length); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentIngestAndRead: writers, readers and a flusher at once
// (run with -race).
func TestConcurrentIngestAndRead(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "s.db"), func(c *Config) { c.BatchBytes = 50 * content.ChunkSize })
	f := newFixture(t, 2000*content.ChunkSize+3, 13)
	s.PutDescriptor(f.d)
	n := uint64(len(f.chunks))
	var wg sync.WaitGroup
	for g := uint64(0); g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lo := g * 50; lo < n; lo += 200 {
				if err := s.Ingest(ctx, f.name, f.rng(t, lo, min(lo+50, n))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	got := make([][]byte, 2)
	for k := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := s.NewReader(ctx, f.name)
			if err != nil {
				t.Error(err)
				return
			}
			got[k], err = io.ReadAll(r)
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 5; i++ {
			if err := s.Flush(ctx); err != nil {
				t.Error(err)
			}
		}
	}()
	wg.Wait()
	for k := range got {
		if !bytes.Equal(got[k], f.data) {
			t.Fatalf("reader %d read wrong bytes", k)
		}
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	s, err := Open(DefaultConfig(filepath.Join(t.TempDir(), "s.db")))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, 10*content.ChunkSize, 14)
	s.PutDescriptor(f.d)
	if err := s.Ingest(context.Background(), f.name, f.rng(t, 0, 10)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.done: // the writer goroutine has returned
	default:
		t.Fatal("writer still running after Close")
	}
	if err := s.Flush(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("flush after close: %v", err)
	}
	if err := s.Ingest(context.Background(), f.name, f.rng(t, 0, 10)); err == nil {
		t.Fatal("ingest after close succeeded")
	}
	// What was queued before Close reached the disk.
	s = openTest(t, s.cfg.Path, nil)
	if _, count, _ := s.Progress(f.name); count != 10 {
		t.Fatalf("count %d after close and reopen", count)
	}
}

func TestPublishTiny(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "p.db"), nil)
	for _, size := range []int{0, 1, content.ChunkSize, GroupChunks*content.ChunkSize + 1} {
		data := bytes.Repeat([]byte{7}, size)
		d, name, err := s.Publish(ctx, testKey(2), "text/plain", uint64(size), bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if size == 0 && content.RootOfDescriptor(d) != content.EmptyRoot {
			t.Fatal("empty content root")
		}
		if got := readAll(t, s, name); !bytes.Equal(got, data) {
			t.Fatalf("size %d: read %d bytes", size, len(got))
		}
		if p, count, _ := s.Progress(name); p != 3 || count != content.ChunkCount(uint64(size)) {
			t.Fatalf("size %d: progress %d count %d", size, p, count)
		}
		if _, err := s.Check(name); err != nil {
			t.Fatal(err)
		}
	}
}

// A reader of a live stream waiting in chunks the fetch jumped over
// (SkipLive) fails with ErrEvicted instead of waiting for ever; chunks
// held below the jump still read, and LiveFloor says where to go on.
func TestSkipLiveEndsWaits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	window := 16 * content.ChunkSize // keeps 64 chunks: nothing evicted here
	pubS, subS, pub, name := liveStores(t, 5, "video/mp2t", func(c *Config) { c.WindowBytes = window })
	all := make([]byte, 40*content.ChunkSize)
	for i := range all {
		all[i] = byte(i * 13)
	}
	head, err := pub.Append(ctx, 2000, all)
	if err != nil || head.Length != 40 {
		t.Fatalf("append: %d %v", head.Length, err)
	}
	if err := pubS.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// The subscriber holds chunks 10-11 and 20-39 only.
	for _, rg := range [][2]uint64{{10, 12}, {20, 40}} {
		pr, err := pubS.Proof(name, rg[0], rg[1])
		if err != nil {
			t.Fatal(err)
		}
		r := content.Range{Start: rg[0], Proof: pr}
		for i := rg[0]; i < rg[1]; i++ {
			c, st, err := pubS.Chunk(name, i)
			if err != nil {
				t.Fatal(err)
			}
			r.Chunks, r.Times = append(r.Chunks, c), append(r.Times, st.Timestamp)
		}
		if err := subS.Ingest(ctx, name, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := subS.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// A reader at chunk 5 waits: the chunk may still come.
	r, _ := subS.NewReader(ctx, name)
	r.Seek(5*content.ChunkSize, io.SeekStart)
	done := make(chan error, 1)
	go func() {
		_, err := r.Read(make([]byte, 10))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("a read of a chunk that may still come returned: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	// The fetch jumps to 20: the wait ends.
	if err := subS.SkipLive(name, 20); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrEvicted) {
			t.Fatalf("read in the skipped gap: %v, want ErrEvicted", err)
		}
	case <-ctx.Done():
		t.Fatal("a read in the skipped gap still waits")
	}
	if err := subS.SkipLive(name, 15); err != nil { // never lowers it
		t.Fatal(err)
	}
	if floor, err := subS.LiveFloor(name); err != nil || floor != 20 {
		t.Fatalf("LiveFloor %d %v, want 20", floor, err)
	}
	// What is held below the jump, and from it on, still reads.
	for _, at := range []uint64{10, 20, 39} {
		r.Seek(int64(at)*content.ChunkSize, io.SeekStart)
		got := make([]byte, content.ChunkSize)
		if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, all[at*content.ChunkSize:(at+1)*content.ChunkSize]) {
			t.Fatalf("chunk %d: %v", at, err)
		}
	}
}
