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
