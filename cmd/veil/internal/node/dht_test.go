package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"veil/circuits/link"
	"veil/proto"
)

// TestSendVarStuckPeer: over real TLS links on 127.0.0.1, a peer that
// stops reading fills the link's send queue; a DHT send (SendVarContext,
// as linksTransport uses it) then gives up when its context ends instead
// of blocking the sender for good.
func TestSendVarStuckPeer(t *testing.T) {
	_, ka, _ := ed25519.GenerateKey(rand.Reader)
	_, kb, _ := ed25519.GenerateKey(rand.Reader)
	cfg := link.DefaultConfig()
	cfg.SendQueueBytes = 16 << 10
	a, b := link.NewLinks(ka, cfg), link.NewLinks(kb, cfg)
	defer a.Close()
	defer b.Close()
	release := make(chan struct{})
	defer close(release)
	// b's reader blocks in its handler at the first cell: b reads nothing
	// more, TCP buffers fill, then a's queue.
	b.SetHandlers(link.Handlers{Var: func(link.Conn, proto.VarCell) { <-release }})
	addr, err := b.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l, err := a.Get(ctx, proto.NodeIDFromKey(kb.Public().(ed25519.PublicKey)), addr.String())
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, proto.MaxVarPayload)
	for i := 0; ; i++ {
		if i > 100_000 {
			t.Fatal("100,000 var cells queued to a peer that reads nothing")
		}
		sctx, scancel := context.WithTimeout(ctx, 200*time.Millisecond)
		start := time.Now()
		err := l.SendVarContext(sctx, proto.VarCell{Command: proto.CmdDHT, Payload: payload})
		scancel()
		if errors.Is(err, context.DeadlineExceeded) {
			if waited := time.Since(start); waited > 10*time.Second {
				t.Fatalf("send gave up after %v", waited)
			}
			t.Logf("send %d gave up at its deadline with %d bytes queued", i, l.QueuedBytes())
			return
		}
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
}
