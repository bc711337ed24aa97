package chunkstore

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"veil/chunkstore/content"
	"veil/proto"
)

// liveHistory is one history a publisher key signed: its chunks, their
// times, and the heads it signed.
type liveHistory struct {
	name   proto.HashName
	chunks [][]byte
	times  []uint32
	leaves []content.Hash
}

func newHistory(name proto.HashName, n int, salt byte, base *liveHistory, keep int) *liveHistory {
	h := &liveHistory{name: name}
	for i := range n {
		var c []byte
		var ts uint32
		if base != nil && i < keep {
			c, ts = base.chunks[i], base.times[i]
		} else {
			c = make([]byte, content.ChunkSize)
			c[0], c[1], c[2] = byte(i), byte(i>>8), salt
			ts = uint32(5000 + i)
		}
		h.chunks, h.times = append(h.chunks, c), append(h.times, ts)
		h.leaves = append(h.leaves, content.LiveLeafHash(ts, c))
	}
	return h
}

// head signs the history's first n chunks at ts.
func (h *liveHistory) head(n uint64, ts uint32) content.Head {
	return content.SignHead(testKey(7), h.name, content.Head{Length: n, Timestamp: ts, Root: content.RootOf(h.leaves[:n])})
}

// rangeOf is chunks [lo, hi) proved against hd, with a consistency proof
// from `from` chunks when from > 0.
func (h *liveHistory) rangeOf(t *testing.T, lo, hi uint64, hd content.Head, from uint64) content.Range {
	t.Helper()
	tree := content.MemTree(h.leaves[:hd.Length])
	hs, err := content.BuildProof(hd.Length, lo, hi, tree.Node)
	if err != nil {
		t.Fatal(err)
	}
	r := content.Range{Start: lo, Chunks: h.chunks[lo:hi], Times: h.times[lo:hi], Proof: content.Proof{Live: true, Head: hd, Hashes: hs}}
	if from > 0 {
		if r.Proof.Consistency, err = content.ConsistencyProof(from, hd.Length, tree.Node); err != nil {
			t.Fatal(err)
		}
		r.Proof.From = from
	}
	return r
}

func liveStore(t *testing.T) (*Store, proto.HashName, string) {
	t.Helper()
	d, err := content.NewLiveDescriptor(testKey(7), "video/webm", 1000)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "live.db")
	s := openTest(t, path, nil)
	if _, err := s.PutDescriptor(d); err != nil {
		t.Fatal(err)
	}
	return s, content.HashNameOf(d), path
}

// TestLiveFork: the publisher's key signs two histories that agree on
// the first 5 chunks. Once the store holds a head of the honest one, no
// head of the forked one is taken, whatever its length and however it is
// proved; honest longer heads are taken with either form of consistency
// proof, and not without one. The store then reopens with every chunk
// verifying against its head.
func TestLiveFork(t *testing.T) {
	ctx := context.Background()
	s, name, path := liveStore(t)
	honest := newHistory(name, 40, 0, nil, 0)
	forked := newHistory(name, 40, 1, honest, 5)
	h10, h20, h30 := honest.head(10, 100), honest.head(20, 200), honest.head(30, 300)
	f20, f25 := forked.head(20, 250), forked.head(25, 260)

	if err := s.Ingest(ctx, name, honest.rangeOf(t, 0, 10, h10, 0)); err != nil {
		t.Fatal(err)
	}
	refused := []struct {
		what string
		r    content.Range
		want error
	}{
		{"forked head, range at our length", forked.rangeOf(t, 10, 20, f20, 0), ErrForked},
		{"forked head, consistency proof", forked.rangeOf(t, 12, 20, f20, 10), ErrForked},
		{"forked head, no proof", forked.rangeOf(t, 12, 25, f25, 0), ErrNoConsistency},
		{"honest head, no proof", honest.rangeOf(t, 12, 20, h20, 0), ErrNoConsistency},
		{"honest head, proof from another length", honest.rangeOf(t, 12, 20, h20, 7), ErrNoConsistency},
		{"honest head signed before ours", honest.rangeOf(t, 10, 20, honest.head(20, 50), 0), ErrStaleHead},
	}
	for _, c := range refused {
		if err := s.Ingest(ctx, name, c.r); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.what, err, c.want)
		}
		if hd, _ := s.Head(name); hd != h10 {
			t.Fatalf("%s: head moved to %d chunks", c.what, hd.Length)
		}
	}
	// Honest growth: a consistency proof from our length, then a range
	// starting at our length.
	if err := s.Ingest(ctx, name, honest.rangeOf(t, 14, 20, h20, 10)); err != nil {
		t.Fatalf("honest head with a consistency proof: %v", err)
	}
	if err := s.Ingest(ctx, name, honest.rangeOf(t, 20, 30, h30, 0)); err != nil {
		t.Fatalf("honest head by a range at our length: %v", err)
	}
	if err := s.Ingest(ctx, name, honest.rangeOf(t, 10, 14, h30, 0)); err != nil {
		t.Fatalf("older chunks under our head: %v", err)
	}
	// Equal length, other root: the old check still holds.
	if err := s.Ingest(ctx, name, forked.rangeOf(t, 0, 3, forked.head(30, 400), 0)); !errors.Is(err, ErrForked) {
		t.Fatalf("forked head of our length: %v", err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTest(t, path, nil)
	if hd, _ := s.Head(name); hd != h30 {
		t.Fatalf("reopened with head of %d chunks, want 30", hd.Length)
	}
	if n, err := s.Check(name); err != nil || n != 30 {
		t.Fatalf("reopened store: %d chunks verify, %v", n, err)
	}
}

// TestLiveRollback: an ORDB replaying old heads cannot move the store's
// head back; a genuine old head's chunks are still taken (proved a prefix
// by the store's own nodes), a forked old head's are not, nor a shorter
// head signed after ours.
func TestLiveRollback(t *testing.T) {
	ctx := context.Background()
	s, name, _ := liveStore(t)
	honest := newHistory(name, 40, 0, nil, 0)
	forked := newHistory(name, 40, 1, honest, 5)
	h8, h20 := honest.head(8, 80), honest.head(20, 200)
	if err := s.Ingest(ctx, name, honest.rangeOf(t, 0, 20, h20, 0)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// A replay of a genuine old head: its chunks verify and are ours.
	if err := s.Ingest(ctx, name, honest.rangeOf(t, 2, 6, h8, 0)); err != nil {
		t.Fatalf("genuine old head: %v", err)
	}
	for _, c := range []struct {
		what string
		r    content.Range
		want error
	}{
		{"forked old head", forked.rangeOf(t, 6, 12, forked.head(15, 150), 0), ErrForked},
		{"old length signed after ours", honest.rangeOf(t, 2, 6, honest.head(8, 900), 0), ErrForked},
	} {
		if err := s.Ingest(ctx, name, c.r); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.what, err, c.want)
		}
	}
	if hd, _ := s.Head(name); hd != h20 {
		t.Fatalf("head rolled back to %d chunks", hd.Length)
	}
	// A store that lacks the nodes to prove an old head a prefix refuses
	// it rather than mixing histories.
	s2, _, _ := liveStore(t)
	if err := s2.Ingest(ctx, name, honest.rangeOf(t, 18, 20, h20, 0)); err != nil {
		t.Fatal(err)
	}
	if err := s2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s2.Ingest(ctx, name, honest.rangeOf(t, 2, 6, h8, 0)); !errors.Is(err, ErrStaleHead) {
		t.Fatalf("unprovable old head: %v", err)
	}
}

// TestLiveProofFrom: a server asked by a requester holding a shorter
// head answers with a consistency proof the requester's store accepts.
func TestLiveProofFrom(t *testing.T) {
	ctx := context.Background()
	pubS, subS, pub, name := liveStores(t, 4, "video/webm", nil)
	fetch := func(lo, hi, known uint64) content.Range {
		if err := pubS.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		pr, err := pubS.ProofFrom(name, lo, hi, known)
		if err != nil {
			t.Fatal(err)
		}
		r := content.Range{Start: lo, Proof: pr}
		for i := lo; i < hi; i++ {
			c, st, err := pubS.Chunk(name, i)
			if err != nil {
				t.Fatal(err)
			}
			r.Chunks, r.Times = append(r.Chunks, c), append(r.Times, st.Timestamp)
		}
		return r
	}
	if _, err := pub.Append(ctx, 10, make([]byte, 10*content.ChunkSize)); err != nil {
		t.Fatal(err)
	}
	if err := subS.Ingest(ctx, name, fetch(0, 10, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Append(ctx, 20, make([]byte, 13*content.ChunkSize)); err != nil {
		t.Fatal(err)
	}
	r := fetch(15, 23, 10)
	if r.Proof.From != 10 || len(r.Proof.Consistency) == 0 {
		t.Fatalf("no consistency proof from 10: from %d, %d hashes", r.Proof.From, len(r.Proof.Consistency))
	}
	if err := subS.Ingest(ctx, name, r); err != nil {
		t.Fatalf("answer with a consistency proof: %v", err)
	}
	if hd, _ := subS.Head(name); hd.Length != 23 {
		t.Fatalf("head %d, want 23", hd.Length)
	}
	// The proof survives the wire.
	if p, err := content.ParseProof(r.Proof.Append(nil)); err != nil || p.From != 10 || len(p.Consistency) != len(r.Proof.Consistency) {
		t.Fatalf("proof round trip: %v", err)
	}
}

// TestLiveHeadAge: with MaxHeadAge set, a head signed too long ago is
// refused even by a store that holds no head yet (an ORDB replaying a
// stream's old heads to a newcomer), and a fresh one is taken.
func TestLiveHeadAge(t *testing.T) {
	ctx := context.Background()
	d, err := content.NewLiveDescriptor(testKey(7), "video/webm", 1000)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(10_000, 0)
	s := openTest(t, filepath.Join(t.TempDir(), "age.db"), func(c *Config) {
		c.MaxHeadAge, c.Now = time.Minute, func() time.Time { return now }
	})
	if _, err := s.PutDescriptor(d); err != nil {
		t.Fatal(err)
	}
	name := content.HashNameOf(d)
	h := newHistory(name, 20, 0, nil, 0)
	if err := s.Ingest(ctx, name, h.rangeOf(t, 0, 10, h.head(10, 5_000), 0)); !errors.Is(err, ErrStaleHead) {
		t.Fatalf("head signed 5,000 s ago: %v", err)
	}
	if hd, _ := s.Head(name); hd.Length != 0 {
		t.Fatalf("stale head taken: %d chunks", hd.Length)
	}
	if err := s.Ingest(ctx, name, h.rangeOf(t, 0, 10, h.head(10, 9_990), 0)); err != nil {
		t.Fatalf("head signed 10 s ago: %v", err)
	}
}
