package kademlia

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"veil/proto"
)

// attacker is an identity a test floods with; its ID need not solve the
// ID puzzle (the quota tests turn the puzzle off to test the quotas alone).
type attacker struct {
	id  proto.NodeID
	key ed25519.PrivateKey
	ip  netip.Addr
}

func newAttackers(n int, seed uint64, ip func(i int) netip.Addr) []attacker {
	r := seedFrom(seed)
	out := make([]attacker, n)
	for i := range out {
		var s [ed25519.SeedSize]byte
		for j := range s {
			s[j] = byte(r.Uint32())
		}
		k := ed25519.NewKeyFromSeed(s[:])
		out[i] = attacker{id: proto.NodeIDFromKey(k.Public().(ed25519.PublicKey)), key: k, ip: ip(i)}
	}
	return out
}

func (a attacker) store(key proto.HashName, expires time.Time, tx uint64) []byte {
	r := proto.ProviderRecord{Key: key, OnionKey: make([]byte, proto.OnionKeySize), Addr: netip.AddrPortFrom(a.ip, 7700), Pieces: 3, Expires: uint64(expires.Unix())}
	r.Sign(a.key)
	m := proto.DHTMessage{Type: proto.DHTStore, TxID: tx, Sender: netip.AddrPortFrom(a.ip, 7700), Record: r}
	return m.Append(nil)
}

// TestDHTQuota runs the record floods of the hardening review: one
// identity storing far more records than its quota, 64 identities of one
// /24 and then 64 identities of 64 /24s filling the providers of one
// hash_name. Real providers must still be stored and found.
func TestDHTQuota(t *testing.T) {
	t.Run("one identity", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.IDWorkBits = 0
		c, err := NewCore(cfg, testIdentity(t, 0), seedFrom(1))
		if err != nil {
			t.Fatal(err)
		}
		a := newAttackers(1, 5, func(int) netip.Addr { return netip.MustParseAddr("203.0.113.9") })[0]
		refused := 0
		for i := range 4 * cfg.MaxRecordsPerSender {
			key := proto.HashName{byte(i), byte(i >> 8), 0xaa}
			m, err := proto.ParseDHTMessage(a.store(key, testNow.Add(time.Hour), uint64(i+1)))
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Handle(a.id, a.ip, m, testNow); errors.Is(err, ErrQuota) {
				refused++
			} else if err != nil {
				t.Fatal(err)
			}
		}
		c.Ready()
		if got := c.Store().SenderRecords(a.id); got != cfg.MaxRecordsPerSender || refused != 3*cfg.MaxRecordsPerSender {
			t.Fatalf("flooder holds %d records (quota %d), %d STOREs refused", got, cfg.MaxRecordsPerSender, refused)
		}
		// A real provider, from another subnet, is still stored.
		p := testIdentity(t, 1)
		rec := testRecord(p, proto.HashName{0x42}, testNow.Add(time.Hour))
		if err := c.Handle(p.ID, netip.MustParseAddr("198.51.100.7"), proto.DHTMessage{Type: proto.DHTStore, TxID: 99, Sender: p.Addr, Record: rec}, testNow); err != nil {
			t.Fatal(err)
		}
		if sends, _ := c.Ready(); len(sends) == 0 || sends[0].Msg.Status != proto.StoreOK {
			t.Fatalf("real provider's STORE not acknowledged: %+v", sends)
		}
		if got := c.Store().Get(proto.HashName{0x42}, testNow, 16); len(got) != 1 || got[0].ORDB != p.ID {
			t.Fatalf("real provider's record not kept: %v", got)
		}
	})

	key := proto.HashName{0x5a, 0x5a}
	floods := []struct {
		name string
		ip   func(i int) netip.Addr
	}{
		{"64 identities of one /24", func(i int) netip.Addr { return netip.AddrFrom4([4]byte{203, 0, 113, byte(i + 1)}) }},
		{"64 identities of 64 /24s", func(i int) netip.Addr { return netip.AddrFrom4([4]byte{100, 64, byte(i), 1}) }},
	}
	for fi, flood := range floods {
		t.Run(flood.name, func(t *testing.T) {
			const n = 12
			mem := NewMemNetwork()
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			defer func() { cancel(); wg.Wait() }()
			var nodes []*Node
			for i := range n {
				cfg := DefaultNodeConfig()
				cfg.DHT.IDWorkBits = 0
				cfg.Rand = seedFrom(uint64(i))
				id := testIdentity(t, i)
				id.Addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i), 1}), 7700) // a label: nothing is dialed
				node, err := NewNode(cfg, id, mem.Transport(id.ID))
				if err != nil {
					t.Fatal(err)
				}
				mem.Attach(node)
				nodes = append(nodes, node)
				wg.Add(1)
				go func() { defer wg.Done(); _ = node.Run(ctx) }()
			}
			for _, node := range nodes[1:] {
				if _, err := node.Bootstrap(ctx, []proto.DHTContact{nodes[0].Contact()}); err != nil {
					t.Fatal(err)
				}
			}
			// The flood: every attacker stores a record for key on every
			// honest node, before any real provider comes.
			attackers := newAttackers(64, uint64(10+fi), flood.ip)
			expires := time.Now().Add(time.Hour)
			for _, node := range nodes {
				for j, a := range attackers {
					if err := node.Deliver(a.id, a.ip, a.store(key, expires, uint64(j+1))); err != nil {
						t.Fatal(err)
					}
				}
			}
			waitHandled(t, ctx, nodes, 64)
			held := 0
			for _, node := range nodes {
				st, _ := node.Stats(ctx)
				held += st.Records
			}
			t.Logf("after the flood the %d nodes hold %d attacker records", n, held)
			if fi == 0 && held > n*DefaultConfig().MaxKeyRecordsPerSubnet {
				t.Fatalf("one /24 placed %d records on %d nodes, quota %d each", held, n, DefaultConfig().MaxKeyRecordsPerSubnet)
			}
			if fi == 1 && held != n*DefaultConfig().MaxRecordsPerKey {
				t.Fatalf("64 /24s placed %d records, want the per-key limit everywhere (%d)", held, n*DefaultConfig().MaxRecordsPerKey)
			}
			// Three real providers come; each is stored and found.
			real := []int{3, 5, 7}
			for _, i := range real {
				r, err := nodes[i].Provide(ctx, key, 3, false)
				if err != nil || r.Stored == 0 {
					t.Fatalf("provider %d: %v, stored on %d", i, err, r.Stored)
				}
			}
			found := map[proto.NodeID]bool{}
			for _, i := range []int{2, 9, 11} {
				r, err := nodes[i].FindValue(ctx, key)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("find_value from %d: %d records, %d closest, %d msgs", i, len(r.Records), len(r.Closest), r.Msgs)
				for _, rec := range r.Records {
					found[rec.ORDB] = true
				}
			}
			for _, i := range real {
				if !found[nodes[i].ID()] {
					t.Fatalf("real provider %d not found among %d providers", i, len(found))
				}
			}
		})
	}
}

// waitHandled polls until every node has handled at least n RPCs.
func waitHandled(t *testing.T, ctx context.Context, nodes []*Node, n uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, node := range nodes {
		for {
			st, err := node.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.Received >= n {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %v handled %d of %d RPCs", node.ID().Short(), st.Received, n)
			}
			select {
			case <-time.After(5 * time.Millisecond):
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			}
		}
	}
}
