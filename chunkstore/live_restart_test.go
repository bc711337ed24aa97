package chunkstore

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"veil/chunkstore/content"
)

// A store that fell behind everything a live stream's holders keep (a head
// longer than its own by the kept windows or more) takes that head without
// a consistency proof, which nobody could build (the nodes it needs are
// evicted everywhere), and evicts every chunk it held: it starts again, as
// a new reader would. A nearer head still needs the proof, before and
// after; an older head is still a rollback.
func TestLiveRestartPastKept(t *testing.T) {
	ctx := context.Background()
	d, err := content.NewLiveDescriptor(testKey(7), "video/webm", 1000)
	if err != nil {
		t.Fatal(err)
	}
	s := openTest(t, filepath.Join(t.TempDir(), "live.db"), func(c *Config) { c.WindowBytes = 16 * content.ChunkSize })
	if _, err := s.PutDescriptor(d); err != nil {
		t.Fatal(err)
	}
	name := content.HashNameOf(d)
	keep := s.cfg.keepChunks() // 64 chunks
	honest := newHistory(name, 400, 0, nil, 0)
	if err := s.Ingest(ctx, name, honest.rangeOf(t, 0, 10, honest.head(10, 100), 0)); err != nil {
		t.Fatal(err)
	}
	// Longer by less than the kept windows: the proof is still required.
	near := honest.head(10+keep-1, 200)
	if err := s.Ingest(ctx, name, honest.rangeOf(t, 60, 70, near, 0)); !errors.Is(err, ErrNoConsistency) {
		t.Fatalf("a head %d chunks longer without a proof: %v, want ErrNoConsistency", keep-1, err)
	}
	if st := s.Stats(); st.LiveRestarts != 0 {
		t.Fatalf("restarts %d", st.LiveRestarts)
	}
	// Longer by the kept windows: a new start.
	far := honest.head(10+keep+200, 300)
	if err := s.Ingest(ctx, name, honest.rangeOf(t, 250, 260, far, 0)); err != nil {
		t.Fatalf("a head %d chunks longer, with no proof possible: %v", keep+200, err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if h, _ := s.Head(name); h != far {
		t.Fatalf("head %d, want the new start's %d", h.Length, far.Length)
	}
	if st := s.Stats(); st.LiveRestarts != 1 {
		t.Fatalf("restarts %d, want 1", st.LiveRestarts)
	}
	if _, _, err := s.Chunk(name, 3); !errors.Is(err, ErrMissing) {
		t.Fatalf("chunk 3, held before the new start: %v, want it evicted", err)
	}
	if c, _, err := s.Chunk(name, 255); err != nil || c[0] != honest.chunks[255][0] {
		t.Fatalf("chunk 255: %v", err)
	}
	// What it holds verifies against the new head from its own nodes
	// (the old history's are gone).
	if n, err := s.Check(name); err != nil || n != 10 {
		t.Fatalf("check after the new start: %d chunks, %v", n, err)
	}
	if floor, _ := s.LiveFloor(name); floor != far.Length-keep {
		t.Fatalf("LiveFloor %d, want %d", floor, far.Length-keep)
	}
	// From the new start on, the rule holds again.
	if err := s.Ingest(ctx, name, honest.rangeOf(t, 280, 290, honest.head(far.Length+20, 400), 0)); !errors.Is(err, ErrNoConsistency) {
		t.Fatalf("a nearer head without a proof after the new start: %v", err)
	}
	if err := s.Ingest(ctx, name, honest.rangeOf(t, 280, 290, honest.head(far.Length+20, 400), far.Length)); err != nil {
		t.Fatalf("a nearer head with its proof: %v", err)
	}
	// An older head signed later is still a rollback.
	if err := s.Ingest(ctx, name, honest.rangeOf(t, 0, 5, honest.head(5, 500), 0)); !errors.Is(err, ErrForked) {
		t.Fatalf("a rollback: %v, want ErrForked", err)
	}
}
