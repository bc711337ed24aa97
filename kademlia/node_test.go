package kademlia

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"veil/proto"
)

// memNodes starts n nodes on a MemNetwork, node 0 the bridge, and
// bootstraps nodes 1..n-1 through it one by one. stop closes them all.
func memNodes(t *testing.T, n int) (nodes []*Node, mem *MemNetwork, stop func()) {
	t.Helper()
	mem = NewMemNetwork()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range n {
		cfg := DefaultNodeConfig()
		cfg.DHT.MaxPerSubnet = 0 // every node is on 127.0.0.1
		cfg.Rand = seedFrom(uint64(i))
		id := testIdentity(t, i)
		node, err := NewNode(cfg, id, mem.Transport(id.ID))
		if err != nil {
			t.Fatal(err)
		}
		mem.Attach(node)
		nodes = append(nodes, node)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := node.Run(ctx); err != nil {
				t.Errorf("Run: %v", err)
			}
		}()
	}
	bridge := []proto.DHTContact{nodes[0].Contact()}
	for _, node := range nodes[1:] {
		if _, err := node.Bootstrap(ctx, bridge); err != nil {
			t.Fatalf("bootstrap: %v", err)
		}
	}
	return nodes, mem, func() {
		for _, node := range nodes {
			node.Close()
			node.Close() // idempotent
		}
		cancel()
		wg.Wait()
	}
}

func TestNodeMemNetwork(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nodes, mem, stop := memNodes(t, 30)
		defer stop()
		ctx := context.Background()
		key := proto.HashName{0xab, 0xcd}
		r, err := nodes[7].Provide(ctx, key, 2, true)
		if err != nil || r.Stored == 0 {
			t.Fatalf("provide: %v (stored %d)", err, r.Stored)
		}
		for i, node := range nodes {
			r, err := node.FindValue(ctx, key)
			if err != nil {
				t.Fatalf("node %d: %v", i, err)
			}
			if len(r.Records) != 1 || r.Records[0].ORDB != nodes[7].ID() || r.Records[0].Pieces != 2 || !r.Records[0].Facilitator {
				t.Fatalf("node %d found %d records", i, len(r.Records))
			}
		}
		// Each node counted its lookup, and the publisher its Provide.
		if st := nodes[7].LookupStats(); st.ByKind[OpProvide] != 1 || st.ByKind[OpFindValue] != 1 || st.Rounds < 2 || st.RPCs == 0 {
			t.Fatalf("publisher's lookup stats %+v", st)
		}
		if st := nodes[3].LookupStats(); st.ByKind[OpFindValue] != 1 || st.ByKind[OpProvide] != 0 || st.Failed != 0 {
			t.Fatalf("lookup stats %+v", st)
		}
		// A third of the nodes go down without notice: lookups time out
		// on them and still find the record.
		for _, node := range nodes[10:20] {
			mem.SetDown(node.ID(), true)
		}
		for i, node := range nodes[20:] {
			r, err := node.FindValue(ctx, key)
			if err != nil || len(r.Records) == 0 {
				t.Fatalf("after churn, node %d: %v, %d records", 20+i, err, len(r.Records))
			}
		}
	})
}

func TestNodeRejectsGarbage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nodes, _, stop := memNodes(t, 3)
		defer stop()
		ctx := context.Background()
		n := nodes[1]
		before, err := n.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stranger := testIdentity(t, 99)
		bad := [][]byte{
			nil,
			{0},
			{byte(proto.DHTPing)},            // truncated header
			{200, 0, 0, 0, 0, 0, 0, 0, 1, 0}, // unknown type
			proto.DHTMessage{Type: proto.DHTNodes, TxID: 12345}.Append(nil),                              // unexpected answer
			append(proto.DHTMessage{Type: proto.DHTPing, TxID: 1, Sender: stranger.Addr}.Append(nil), 0), // trailing byte
			make([]byte, proto.MaxDHTMessage+1),
		}
		for _, b := range bad {
			n.Deliver(stranger.ID, b)
		}
		synctest.Wait()
		after, err := n.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if after.Rejected-before.Rejected != uint64(len(bad)) {
			t.Fatalf("rejected %d of %d bad RPCs", after.Rejected-before.Rejected, len(bad))
		}
		if after.TableSize != before.TableSize || after.Records != before.Records {
			t.Fatalf("bad RPCs changed the node: %+v -> %+v", before, after)
		}
	})
}

func TestNodeClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := NewMemNetwork()
		id := testIdentity(t, 1)
		cfg := DefaultNodeConfig()
		cfg.Bridges = []proto.DHTContact{identContact(testIdentity(t, 2))}
		n, err := NewNode(cfg, id, mem.Transport(id.ID))
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error)
		go func() { done <- n.Run(context.Background()) }()
		// The bridge is not attached: bootstrap fails, the node keeps
		// running and retries.
		time.Sleep(3 * cfg.DHT.RebootstrapInterval)
		ctx := context.Background()
		if st, err := n.Stats(ctx); err != nil || st.TableSize != 0 {
			t.Fatalf("stats: %+v %v", st, err)
		}
		n.Close()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		n.Close()
		if _, err := n.FindNode(ctx, proto.NodeID{1}); !errors.Is(err, ErrClosed) {
			t.Fatalf("call after Close: %v", err)
		}
		if err := n.Deliver(id.ID, nil); !errors.Is(err, ErrClosed) {
			t.Fatalf("Deliver after Close: %v", err)
		}
	})
}
