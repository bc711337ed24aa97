package ordb

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"sync"
	"testing"
	"time"

	"veil/chunkstore"
	"veil/proto"
	"veil/window"
)

// growingCircuits serves a live stream from pub on one stream per
// circuit, calling between(k) before answering the k-th data query (k
// from 0) of all streams: a hook to grow the stream between answers.
type growingCircuits struct {
	pub     *chunkstore.Store
	between func(k int)
	// liveStart, if set, sends DB_LIVE_START two windows behind the
	// newest chunk before each descriptor, as an ORDB does.
	liveStart bool

	mu       sync.Mutex
	queries  int
	replaced []window.Why
	wg       sync.WaitGroup
}

func (g *growingCircuits) OpenStream(ctx context.Context, id window.CircuitID) (CellStream, error) {
	client, server := streamPair()
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		defer server.Close()
		m := newMsgConn(server)
		srv := &Server{Store: g.pub}
		var bufs serveBufs
		for {
			cmd, msg, err := m.recv()
			if err != nil || cmd != proto.RelayDBQuery {
				return
			}
			q, err := proto.ParseDBQuery(msg)
			if err != nil {
				return
			}
			if !q.WantsDescriptor() {
				g.mu.Lock()
				k := g.queries
				g.queries++
				g.mu.Unlock()
				g.between(k)
			}
			if q.WantsDescriptor() && g.liveStart {
				if h, err := g.pub.Head(q.HashName); err == nil {
					if m.send(proto.DBLiveStart{Chunk: h.Length - min(h.Length, 2*960)}) != nil {
						return
					}
				}
			}
			if err := srv.answer(m, &bufs, q); err != nil {
				return
			}
		}
	}()
	return client, nil
}

func (g *growingCircuits) Replace(ctx context.Context, id window.CircuitID, why window.Why) (window.CircuitID, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.replaced = append(g.replaced, why)
	return id + 100, nil
}

// Answers proven against a head that another answer of the same stream
// has replaced (the stream grew between them: the queries left with no
// head, so no consistency proof could come) are asked again, and the
// stream goes on being read: the GETs queued behind a stale answer are
// answered on it, no circuit is judged stalled or replaced, and the
// bytes are the stream's, in order.
func TestGetLiveStaleAnswerKeepsStream(t *testing.T) {
	pub := openStore(t, "pub.db")
	_, priv, _ := ed25519.GenerateKey(nil)
	lp, err := pub.NewLivePublisher(priv, "video/mp2t", 1_700_000_000)
	if err != nil {
		t.Fatal(err)
	}
	var stream []byte
	appendChunks := func(n int) {
		data := make([]byte, n*proto.ChunkSize)
		for i := range data {
			data[i] = byte(len(stream)/proto.ChunkSize*7 + i*13)
		}
		if _, err := lp.Append(context.Background(), uint32(1_700_000_000+len(stream)/proto.ChunkSize), data); err != nil {
			t.Fatal(err)
		}
		stream = append(stream, data...)
		if err := pub.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	appendChunks(300)
	gc := &growingCircuits{pub: pub, between: func(k int) {
		if k == 1 {
			// After the first answer took the head of 300 chunks: the
			// answers to the GETs already sent carry a longer head and
			// no consistency proof from 300.
			appendChunks(100)
		}
	}}
	defer gc.wg.Wait()
	st := openStore(t, "cache.db")
	var mu sync.Mutex
	var got []byte
	var order []uint64
	g, err := NewGet(GetConfig{Name: lp.Name(), Store: st, Circuits: gc, Initial: []window.CircuitID{1},
		Deliver: func(chunk uint64, data []byte) error {
			mu.Lock()
			defer mu.Unlock()
			order = append(order, chunk)
			got = append(got, data...)
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(getCtx(t), 30*time.Second)
	defer cancel()
	ended := make(chan error, 1)
	go func() { _, err := g.Run(ctx); ended <- err }()
	for deadline := time.Now().Add(20 * time.Second); ; {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 400*proto.ChunkSize {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivered %d bytes of the live stream, want %d", n, 400*proto.ChunkSize)
		}
		select {
		case err := <-ended:
			t.Fatalf("Get ended: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("live Get ended with %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !bytes.Equal(got[:400*proto.ChunkSize], stream) {
		t.Fatal("the live bytes differ from the stream's")
	}
	for i := 1; i < len(order); i++ {
		if order[i] <= order[i-1] {
			t.Fatalf("deliveries out of order: %d after %d", order[i], order[i-1])
		}
	}
	gc.mu.Lock()
	defer gc.mu.Unlock()
	if len(gc.replaced) != 0 {
		t.Fatalf("circuits replaced %v: a stale answer stopped its stream's reader", gc.replaced)
	}
}

// A live fetch that falls behind what the publisher keeps (its ORDB went
// quiet while the stream grew by more than the kept windows): the chunks
// at its read position are answered UNAVAILABLE, and so, once it jumped
// to the newest head it knew, are those; it asks the descriptor again and
// goes on from where the stream stands (DB_LIVE_START), saying how many
// chunks it skipped, instead of asking for evicted chunks for ever. What
// it delivers is the stream's bytes.
func TestGetLiveFallsBehind(t *testing.T) {
	pub := openStore(t, "pub.db")
	_, priv, _ := ed25519.GenerateKey(nil)
	lp, err := pub.NewLivePublisher(priv, "video/mp2t", 1_700_000_000)
	if err != nil {
		t.Fatal(err)
	}
	var smu sync.Mutex // guards stream
	var stream []byte
	appendChunks := func(n int) {
		smu.Lock()
		defer smu.Unlock()
		for range n / 500 {
			data := make([]byte, 500*proto.ChunkSize)
			for i := range data {
				data[i] = byte(len(stream)/proto.ChunkSize*7 + i*13)
			}
			if _, err := lp.Append(context.Background(), uint32(1_700_000_000+len(stream)/proto.ChunkSize/500), data); err != nil {
				t.Error(err)
				return
			}
			stream = append(stream, data...)
		}
		if err := pub.Flush(context.Background()); err != nil {
			t.Error(err)
		}
	}
	appendChunks(3000)
	rec := newReceived()
	mu, got := &rec.mu, rec.got // mu also guards paused
	paused, resume := false, make(chan struct{})
	var resumeOnce sync.Once
	unpause := func() { resumeOnce.Do(func() { close(resume) }) }
	gc := &growingCircuits{pub: pub, liveStart: true, between: func(int) {
		mu.Lock()
		p := paused
		mu.Unlock()
		if p {
			<-resume
		}
	}}
	defer gc.wg.Wait()
	defer unpause()
	st := openStore(t, "cache.db")
	wcfg := window.DefaultConfig(lp.Name())
	wcfg.LiveSkipAfter = 200 * time.Millisecond // the default 5 s, shortened for the test
	wcfg.LiveRetry = 50 * time.Millisecond
	g, err := NewGet(GetConfig{Name: lp.Name(), Store: st, Circuits: gc, Initial: []window.CircuitID{1, 2, 3, 4, 5}, Window: wcfg,
		Deliver: rec.deliver, Progress: rec.progress})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(getCtx(t), 30*time.Second)
	defer cancel()
	ended := make(chan error, 1)
	go func() { _, err := g.Run(ctx); ended <- err }()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !ok(); {
			if time.Now().After(deadline) {
				mu.Lock()
				t.Fatalf("waiting for %s: %d chunks delivered, progress %+v", what, len(got), rec.last)
			}
			select {
			case err := <-ended:
				t.Fatalf("Get ended: %v", err)
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	// Started two windows behind the head (1,080), it reads a few chunks.
	waitFor("the first chunks", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) > 0
	})
	mu.Lock()
	paused = true
	mu.Unlock()
	// The stream grows by 8,000 chunks: the publisher keeps its newest
	// 4,016, from 6,984 on.
	appendChunks(8000)
	mu.Lock()
	paused = false
	mu.Unlock()
	unpause()
	waitFor("chunks past what was evicted", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for i := range got {
			if i >= 9000 {
				return true
			}
		}
		return false
	})
	cancel()
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("live Get ended with %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	smu.Lock()
	defer smu.Unlock()
	for i, c := range got {
		if !bytes.Equal(c, stream[i*proto.ChunkSize:(i+1)*proto.ChunkSize]) {
			t.Fatalf("chunk %d differs from the stream's", i)
		}
	}
	if rec.last.Skipped == 0 {
		t.Fatalf("progress %+v: no chunk counted as skipped", rec.last)
	}
	t.Logf("skipped %d chunks, delivered %d", rec.last.Skipped, len(got))
}
