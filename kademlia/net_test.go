package kademlia

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"veil/circuits"
	"veil/circuits/link"
	"veil/proto"
)

// linksTransport carries DHT RPCs over link.Links as proto.CmdDHT var
// cells, as a veil node does: the existing link to the peer if there is
// one (answers go back on the link the request came on), else a new one.
type linksTransport struct{ m *link.Links }

var _ Transport = linksTransport{}

func (t linksTransport) Send(ctx context.Context, to proto.DHTContact, payload []byte) error {
	l := t.m.Lookup(to.ID)
	if l == nil {
		if !to.Addr.IsValid() {
			return fmt.Errorf("%w: no link to %v and no address", ErrUnreachable, to.ID.Short())
		}
		var err error
		if l, err = t.m.Get(ctx, to.ID, to.Addr.String()); err != nil {
			return err
		}
	}
	return l.SendVar(proto.VarCell{Command: proto.CmdDHT, Payload: payload})
}

type netNode struct {
	links *link.Links
	node  *Node
}

func startNetNode(t *testing.T, ctx context.Context, wg *sync.WaitGroup, seed uint64) *netNode {
	t.Helper()
	cid, err := circuits.NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	lcfg := link.DefaultConfig()
	lcfg.MaxInboundPerSubnet = 0 // fifty nodes on 127.0.0.1: one /24
	links := link.NewLinks(cid.Key, lcfg)
	var target atomic.Pointer[Node]
	links.SetHandlers(link.Handlers{
		Cell: func(l link.Conn, c *proto.Cell) { proto.PutCell(c) },
		Var: func(l link.Conn, v proto.VarCell) {
			if n := target.Load(); n != nil && v.Command == proto.CmdDHT {
				_ = n.Deliver(l.Peer(), v.Payload) // copies the payload
			}
		},
	})
	addr, err := links.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultNodeConfig()
	cfg.DHT.MaxPerSubnet = 0 // all on 127.0.0.1
	cfg.Rand = seedFrom(seed)
	node, err := NewNode(cfg, Identity{ID: cid.ID, Addr: ap, OnionKey: cid.OnionPublic(), Key: cid.Key}, linksTransport{links})
	if err != nil {
		t.Fatal(err)
	}
	target.Store(node)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := node.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	return &netNode{links: links, node: node}
}

// TestNet50 runs 50 DHT nodes on 127.0.0.1 over real TLS links: they join
// through one bridge, one node provides a hash_name, and every other node
// finds its record.
func TestNet50(t *testing.T) {
	if testing.Short() {
		t.Skip("50 nodes over TLS: skipped with -short")
	}
	const n = 50
	before := runtime.NumGoroutine()
	defer func() {
		// Every goroutine of the nodes and links is gone once closed
		// (bounded wait: closing TCP connections takes a moment).
		for i := 0; i < 100 && runtime.NumGoroutine() > before; i++ {
			time.Sleep(50 * time.Millisecond)
		}
		if g := runtime.NumGoroutine(); g > before {
			t.Errorf("%d goroutines leaked", g-before)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	nodes := make([]*netNode, n)
	for i := range nodes {
		nodes[i] = startNetNode(t, ctx, &wg, uint64(i))
	}
	defer func() {
		for _, nn := range nodes {
			nn.node.Close()
		}
		wg.Wait()
		for _, nn := range nodes {
			nn.links.Close()
		}
	}()
	bridge := []proto.DHTContact{nodes[0].node.Contact()}
	// Join in batches of 10 at once.
	for b := 1; b < n; b += 10 {
		var jw sync.WaitGroup
		for _, nn := range nodes[b:min(b+10, n)] {
			jw.Add(1)
			go func() {
				defer jw.Done()
				if _, err := nn.node.Bootstrap(ctx, bridge); err != nil {
					t.Errorf("bootstrap: %v", err)
				}
			}()
		}
		jw.Wait()
	}
	if t.Failed() {
		return
	}
	key := proto.HashName{0x5e, 0xed}
	provider := nodes[17].node
	r, err := provider.Provide(ctx, key, 3, false)
	if err != nil || r.Stored == 0 {
		t.Fatalf("provide: %v (stored on %d)", err, r.Stored)
	}
	t.Logf("record stored on %d nodes", r.Stored)
	var found atomic.Int32
	var fw sync.WaitGroup
	for i, nn := range nodes {
		if nn.node == provider {
			continue
		}
		fw.Add(1)
		go func() {
			defer fw.Done()
			r, err := nn.node.FindValue(ctx, key)
			switch {
			case err != nil:
				t.Errorf("node %d: %v", i, err)
			case len(r.Records) != 1 || r.Records[0].ORDB != provider.ID() || r.Records[0].Addr != provider.Contact().Addr:
				t.Errorf("node %d: %d records", i, len(r.Records))
			default:
				found.Add(1)
			}
		}()
	}
	fw.Wait()
	if found.Load() != n-1 {
		t.Fatalf("%d of %d nodes found the record", found.Load(), n-1)
	}
	st, _ := nodes[0].node.Stats(ctx)
	t.Logf("all %d found it; bridge table %d, links %d", n-1, st.TableSize, nodes[0].links.Len())
}
