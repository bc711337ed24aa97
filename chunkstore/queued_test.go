package chunkstore

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"veil/chunkstore/content"
)

// TestReaderSeesQueuedChunks: a Reader waiting for a chunk gets it as soon
// as Ingest verified and queued it, before the writer commits (the commit
// may wait for its batch and an fsync); once committed, it reads the same
// bytes from the file. Chunks that failed verification are never seen.
func TestReaderSeesQueuedChunks(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "s.db"), func(c *Config) {
		c.BatchBytes = 1 << 30
		c.BatchDelay = time.Hour // nothing commits but a Flush
	})
	f := newFixture(t, 300*content.ChunkSize+77, 21)
	if _, err := s.PutDescriptor(f.d); err != nil {
		t.Fatal(err)
	}
	// A tampered range is refused and never readable.
	bad := f.rng(t, 130, 140)
	bad.Chunks = append([][]byte(nil), bad.Chunks...)
	bad.Chunks[3] = bytes.Repeat([]byte{1}, content.ChunkSize)
	if err := s.Ingest(ctx, f.name, bad); err == nil {
		t.Fatal("a tampered range was taken")
	}
	r, err := s.NewReader(ctx, f.name)
	if err != nil {
		t.Fatal(err)
	}
	at := int64(133*content.ChunkSize + 5)
	if _, err := r.Seek(at, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, 2*content.ChunkSize)
		n, err := io.ReadFull(r, b)
		if err != nil {
			t.Error(err)
		}
		got <- b[:n]
	}()
	// Two ranges in one record (GroupChunks 64: record 2 is chunks
	// 128..191), merged by the commit below.
	if err := s.Ingest(ctx, f.name, f.rng(t, 128, 135)); err != nil {
		t.Fatal(err)
	}
	if err := s.Ingest(ctx, f.name, f.rng(t, 135, 160)); err != nil {
		t.Fatal(err)
	}
	want := f.data[at : at+2*content.ChunkSize]
	select {
	case b := <-got:
		if !bytes.Equal(b, want) {
			t.Fatal("queued chunks read wrong")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reader still waits for chunks verified and queued")
	}
	if c := s.commits.Load(); c != 0 {
		t.Fatalf("%d commits before the flush: the read did not come from the queue", c)
	}
	// Readers of the queued ranges run beside the commit that merges
	// them (go test -race checks the commit leaves the queued buffers
	// alone).
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rr, _ := s.NewReader(ctx, f.name)
			b := make([]byte, 30*content.ChunkSize)
			for {
				select {
				case <-stop:
					return
				default:
				}
				rr.Seek(128*content.ChunkSize, io.SeekStart)
				if _, err := io.ReadFull(rr, b); err != nil || !bytes.Equal(b, f.data[128*content.ChunkSize:158*content.ChunkSize]) {
					t.Error("reading queued and committed chunks:", err)
					return
				}
			}
		}()
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	s.mu.Lock()
	left := len(s.infos[f.name].queued)
	s.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d records still queued after the commit", left)
	}
	if b := readRange(t, s, f, 128, 160); !bytes.Equal(b, f.data[128*content.ChunkSize:160*content.ChunkSize]) {
		t.Fatal("committed chunks read wrong")
	}
}

func readRange(t *testing.T, s *Store, f *fixture, lo, hi uint64) []byte {
	t.Helper()
	r, err := s.NewReader(context.Background(), f.name)
	if err != nil {
		t.Fatal(err)
	}
	r.Seek(int64(lo)*content.ChunkSize, io.SeekStart)
	b := make([]byte, (hi-lo)*content.ChunkSize)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestChangedOnDescriptor: Changed's channel closes when a descriptor is
// put (the gateway waits on it for a fetch's descriptor), and when
// verified chunks are queued.
func TestChangedOnDescriptor(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "s.db"), func(c *Config) { c.BatchDelay = time.Hour })
	f := newFixture(t, 10*content.ChunkSize, 4)
	ch := s.Changed()
	select {
	case <-ch:
		t.Fatal("closed before any change")
	default:
	}
	if _, err := s.PutDescriptor(f.d); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Fatal("a descriptor put did not close Changed's channel")
	}
	ch = s.Changed()
	if err := s.Ingest(context.Background(), f.name, f.rng(t, 0, 3)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Fatal("queued chunks did not close Changed's channel")
	}
}
