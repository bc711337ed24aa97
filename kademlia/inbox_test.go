package kademlia

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"veil/proto"
)

// TestInboxFair: a peer flooding RPCs keeps at most InboxPerPeer waiting
// and is served one RPC per turn, so another peer's few RPCs are taken
// within two turns; with the inbox full of many flooders, a newcomer
// pushes out the oldest RPC of the greediest instead of being dropped.
func TestInboxFair(t *testing.T) {
	flooder, honest := proto.NodeID{1}, proto.NodeID{2}
	b := newFairInbox(256, 64, false)
	accepted := 0
	for range 10_000 {
		if b.push(inbound{from: flooder}) == nil {
			accepted++
		}
	}
	if accepted != 64 {
		t.Fatalf("flooder placed %d RPCs, per-peer limit 64", accepted)
	}
	for range 3 {
		if err := b.push(inbound{from: honest}); err != nil {
			t.Fatalf("honest RPC refused: %v", err)
		}
	}
	var order []proto.NodeID
	for range 6 {
		in, ok := b.pop()
		if !ok {
			t.Fatal("inbox empty too early")
		}
		order = append(order, in.from)
	}
	for i, from := range order {
		if want := []proto.NodeID{flooder, honest}[i%2]; from != want {
			t.Fatalf("turn %d served %v, want alternation flooder/honest: %v", i, from.Short(), order)
		}
	}

	// Many flooders fill the inbox; a newcomer still gets in.
	b = newFairInbox(256, 64, false)
	for f := range 8 {
		for range 64 {
			_ = b.push(inbound{from: proto.NodeID{10, byte(f)}})
		}
	}
	if b.n != 256 {
		t.Fatalf("inbox holds %d, want full (256)", b.n)
	}
	if err := b.push(inbound{from: honest}); err != nil {
		t.Fatalf("newcomer refused by a full inbox: %v", err)
	}
	if b.n != 256 || len(b.queues[inboxKey{id: honest}]) != 1 {
		t.Fatalf("after the newcomer: %d waiting, newcomer has %d", b.n, len(b.queues[inboxKey{id: honest}]))
	}
	// A flooder at the top cannot push out others to grow further.
	if err := b.push(inbound{from: proto.NodeID{10, 0}}); err == nil {
		t.Fatalf("the greediest peer pushed out others")
	}
}

// TestInboxBySubnet: kept by subnet, 100 identities of one /24 share one
// peer's share of the inbox; a sender of another /24 is served next turn.
func TestInboxBySubnet(t *testing.T) {
	b := newFairInbox(1024, 64, true)
	accepted := 0
	for i := range 100 {
		for range 10 {
			if b.push(inbound{from: proto.NodeID{byte(i), 7}, ip: netip.AddrFrom4([4]byte{203, 0, 113, byte(i)})}) == nil {
				accepted++
			}
		}
	}
	if accepted != 64 {
		t.Fatalf("one /24 placed %d RPCs under 100 identities, per-peer limit 64", accepted)
	}
	honest := proto.NodeID{0xaa}
	if err := b.push(inbound{from: honest, ip: netip.MustParseAddr("198.51.100.1")}); err != nil {
		t.Fatal(err)
	}
	b.pop()
	if in, _ := b.pop(); in.from != honest {
		t.Fatalf("second turn served %v, want the other /24", in.from.Short())
	}
}

// stuckTransport never delivers to stuck: Send waits until its context
// ends, as linksTransport does when the peer reads nothing and its link's
// queue is full. Sends to anyone else are counted.
type stuckTransport struct {
	stuck     proto.NodeID
	delivered atomic.Int64
	blocked   atomic.Int64
}

func (s *stuckTransport) Send(ctx context.Context, to proto.DHTContact, payload []byte) error {
	if to.ID == s.stuck {
		s.blocked.Add(1)
		defer s.blocked.Add(-1)
		<-ctx.Done()
		return ctx.Err()
	}
	s.delivered.Add(1)
	return nil
}

// TestSendStuckPeer: a peer that stops reading holds MaxSendsPerPeer send
// slots, not all of them, and only until RPCTimeout: sends to everyone
// else go out at once.
func TestSendStuckPeer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultNodeConfig()
		stuck := proto.DHTContact{ID: proto.NodeID{0xee}}
		tr := &stuckTransport{stuck: stuck.ID}
		n, err := NewNode(cfg, testIdentity(t, 0), tr)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); _ = n.Run(ctx) }()
		// Twice the slots of sends to the stuck peer (Run reads their failures).
		for i := range 2 * cfg.MaxSends {
			n.startSend(ctx, outSend{to: stuck, payload: []byte{1}, txid: uint64(i + 1)})
		}
		synctest.Wait()
		if got := tr.blocked.Load(); got != int64(cfg.MaxSendsPerPeer) {
			t.Fatalf("%d sends blocked on the stuck peer, want MaxSendsPerPeer = %d", got, cfg.MaxSendsPerPeer)
		}
		for i := range cfg.MaxSends - cfg.MaxSendsPerPeer {
			if !n.startSend(ctx, outSend{to: proto.DHTContact{ID: proto.NodeID{byte(i), 1}}, payload: []byte{1}}) {
				t.Fatalf("send %d to a healthy peer refused while one peer is stuck", i)
			}
		}
		synctest.Wait()
		if got := tr.delivered.Load(); got != int64(cfg.MaxSends-cfg.MaxSendsPerPeer) {
			t.Fatalf("%d sends to healthy peers delivered", got)
		}
		// RPCTimeout later the stuck sends have given up and the rest of
		// the stuck peer's queue goes the same way, MaxSendsPerPeer at a
		// time; nothing is left blocked once the queue is through.
		time.Sleep(time.Duration(peerQueue/cfg.MaxSendsPerPeer+2) * cfg.DHT.RPCTimeout)
		synctest.Wait()
		if got := tr.blocked.Load(); got != 0 {
			t.Fatalf("%d sends still blocked after their deadlines", got)
		}
		cancel()
		wg.Wait()
		n.Close()
	})
}
