package ordb

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"sync"
	"testing"
	"time"

	"veil/proto"
	"veil/window"
)

// A live stream through Get: the window starts where the store says
// (nothing held: chunk 0, the ORDB sending no DB_LIVE_START here), every
// chunk is verified against the signed head its proof carries (live
// DB_DATA timestamps), and chunks appended while the Get runs are
// delivered too, in order; the Get ends only with its context.
func TestGetLive(t *testing.T) {
	pub := openStore(t, "pub.db")
	_, priv, _ := ed25519.GenerateKey(nil)
	lp, err := pub.NewLivePublisher(priv, "video/mp2t", 1_700_000_000)
	if err != nil {
		t.Fatal(err)
	}
	var stream []byte
	appendChunks := func(from, n int) {
		for k := range n / 100 {
			data := make([]byte, 100*proto.ChunkSize)
			for i := range data {
				data[i] = byte((from+k*100)*7 + i*13)
			}
			// A timestamp per append: DB_DATA runs split where it changes.
			if _, err := lp.Append(context.Background(), uint32(1_700_000_000+from/100+k), data); err != nil {
				t.Fatal(err)
			}
			stream = append(stream, data...)
		}
		if err := pub.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	appendChunks(0, 2000)

	pc := &pipeCircuits{t: t, pub: pub, silent: func(window.CircuitID) bool { return false }, next: 5}
	defer pc.wg.Wait()
	st := openStore(t, "cache.db")
	rec := newReceived()
	mu, got := &rec.mu, rec.got
	g, err := NewGet(GetConfig{Name: lp.Name(), Store: st, Circuits: pc, Initial: []window.CircuitID{1, 2, 3, 4, 5},
		Deliver: rec.deliver, Progress: rec.progress})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(getCtx(t), 30*time.Second)
	defer cancel()
	ended := make(chan error, 1)
	go func() { _, err := g.Run(ctx); ended <- err }()
	waitHeld := func(n uint64) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); ; {
			mu.Lock()
			have := uint64(len(got))
			mu.Unlock()
			if have >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("delivered %d chunks of the live stream, want %d", have, n)
			}
			select {
			case err := <-ended:
				t.Fatalf("Get ended: %v", err)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	waitHeld(2000)
	appendChunks(2000, 1500) // the stream grows while the Get runs
	waitHeld(3500)
	cancel()
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("live Get ended with %v, want its context's end", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range uint64(3500) {
		if !bytes.Equal(got[i], stream[i*proto.ChunkSize:(i+1)*proto.ChunkSize]) {
			t.Fatalf("chunk %d differs", i)
		}
	}
	for i := 1; i < len(rec.order); i++ {
		if rec.order[i] <= rec.order[i-1] {
			t.Fatalf("deliveries out of order: %d after %d", rec.order[i], rec.order[i-1])
		}
	}
	if last := rec.last; !last.Live || last.LiveStart != 0 || last.Total != 0 {
		t.Fatalf("progress %+v, want a live stream read from chunk 0", last)
	}
}

// received records what a Get delivers, chunk by chunk, and its last
// progress report, for a test reading them while the Get runs.
type received struct {
	mu    sync.Mutex
	got   map[uint64][]byte // chunk -> its bytes
	order []uint64          // each delivery's first chunk, in order
	last  GetProgress
}

func newReceived() *received { return &received{got: map[uint64][]byte{}} }

// deliver is a GetConfig.Deliver.
func (r *received) deliver(chunk uint64, data []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.order = append(r.order, chunk)
	for k := 0; k*proto.ChunkSize < len(data); k++ {
		r.got[chunk+uint64(k)] = bytes.Clone(data[k*proto.ChunkSize : (k+1)*proto.ChunkSize])
	}
	return nil
}

// progress is a GetConfig.Progress.
func (r *received) progress(p GetProgress) {
	r.mu.Lock()
	r.last = p
	r.mu.Unlock()
}
