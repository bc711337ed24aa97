package kademlia

import (
	"errors"
	"testing"
	"time"

	"veil/proto"
)

func testCore(t *testing.T, i int) *Core {
	t.Helper()
	cfg := DefaultConfig()
	cfg.MaxPerSubnet = 0
	c, err := NewCore(cfg, testIdentity(t, i), seedFrom(uint64(i)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// coreState is what a rejected RPC must leave unchanged.
type coreState struct {
	table, records, pending, ops int
	sends                        int
}

func stateOf(c *Core) coreState {
	return coreState{c.table.Len(), c.store.Len(), c.pending.len(), c.ops.len(), len(c.sends)}
}

func TestCoreRejectsBadRPCs(t *testing.T) {
	c := testCore(t, 0)
	peer := testIdentity(t, 1)
	other := testIdentity(t, 2)
	// Give the core some state: a contact and a FIND_NODE in flight.
	if err := c.Handle(peer.ID, peer.Addr.Addr(), proto.DHTMessage{Type: proto.DHTPing, TxID: 1, Sender: peer.Addr}, testNow); err != nil {
		t.Fatal(err)
	}
	if _, err := c.FindNode(proto.NodeID{7}, testNow); err != nil {
		t.Fatal(err)
	}
	sends, _ := c.Ready()
	var findTx uint64
	for _, s := range sends {
		if s.Msg.Type == proto.DHTFindNode {
			findTx = s.Msg.TxID
		}
	}
	if findTx == 0 {
		t.Fatal("no FIND_NODE sent")
	}
	key := proto.HashName{5}
	good := testRecord(peer, key, testNow.Add(time.Hour))
	badSig := good
	badSig.Signature = make([]byte, proto.SignatureSize)
	cases := []struct {
		name string
		from proto.NodeID
		m    proto.DHTMessage
		want error
		// refusedStore: the node still answers STORED with a refusal
		refusedStore bool
	}{
		{"answer with unknown tx", peer.ID, proto.DHTMessage{Type: proto.DHTNodes, TxID: findTx + 1}, ErrUnexpected, false},
		{"answer from the wrong node", other.ID, proto.DHTMessage{Type: proto.DHTNodes, TxID: findTx}, ErrUnexpected, false},
		{"answer of the wrong type", peer.ID, proto.DHTMessage{Type: proto.DHTPong, TxID: findTx}, ErrUnexpected, false},
		{"STORED for a FIND_NODE", peer.ID, proto.DHTMessage{Type: proto.DHTStored, TxID: findTx}, ErrUnexpected, false},
		{"from self", c.ID(), proto.DHTMessage{Type: proto.DHTPing, TxID: 9}, ErrSelf, false},
		{"unknown type", peer.ID, proto.DHTMessage{Type: 200, TxID: 9}, ErrUnexpected, false},
		// The descriptor exchange shares the DHT var cell; the node hands
		// it elsewhere, and a core that gets it anyway changes nothing.
		{"DESCRIPTOR_REQUEST", peer.ID, proto.DHTMessage{Type: proto.DHTDescriptorRequest, TxID: 9, Sender: peer.Addr}, ErrNotRequest, false},
		{"DESCRIPTOR with a pending tx", peer.ID, proto.DHTMessage{Type: proto.DHTDescriptor, TxID: findTx}, ErrUnexpected, false},
		{"STORE about someone else", other.ID, proto.DHTMessage{Type: proto.DHTStore, TxID: 9, Sender: other.Addr, Record: good}, ErrNotOwner, true},
		{"STORE with a bad signature", peer.ID, proto.DHTMessage{Type: proto.DHTStore, TxID: 9, Sender: peer.Addr, Record: badSig}, proto.ErrRecordSignature, true},
		{"STORE expired", peer.ID, proto.DHTMessage{Type: proto.DHTStore, TxID: 9, Sender: peer.Addr, Record: testRecord(peer, key, testNow)}, proto.ErrRecordExpired, true},
		{"FIND_PEER about someone else", peer.ID, proto.DHTMessage{Type: proto.DHTFindPeer, TxID: 9, Peer: proto.DBPeer{ID: other.ID, Addr: other.Addr, OnionKey: other.OnionKey}}, ErrNotOwner, false},
	}
	for _, tc := range cases {
		before := stateOf(c)
		err := c.Handle(tc.from, loopback, tc.m, testNow)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		after := stateOf(c)
		sends, _ := c.Ready()
		if tc.refusedStore {
			if len(sends) != 1 || sends[0].Msg.Type != proto.DHTStored || sends[0].Msg.Status != proto.StoreRejected || sends[0].Msg.TxID != 9 {
				t.Errorf("%s: want one STORED refusal, got %+v", tc.name, sends)
			}
			after.sends--
		} else if len(sends) != 0 {
			t.Errorf("%s: sent %d messages", tc.name, len(sends))
		}
		if after != before {
			t.Errorf("%s: state changed: %+v -> %+v", tc.name, before, after)
		}
		if _, ok := c.table.Get(other.ID); ok {
			t.Errorf("%s: sender added to the table", tc.name)
		}
	}
	// The real answer still works afterwards.
	if err := c.Handle(peer.ID, peer.Addr.Addr(), proto.DHTMessage{Type: proto.DHTNodes, TxID: findTx}, testNow); err != nil {
		t.Fatalf("good answer after bad ones: %v", err)
	}
}

func TestCoreAnswers(t *testing.T) {
	c := testCore(t, 0)
	peer := testIdentity(t, 1)
	key := proto.HashName{5}
	rec := testRecord(peer, key, testNow.Add(time.Hour))
	// STORE then FIND_VALUE returns the record; FIND_NODE returns the
	// asker's closest contacts excluding the asker.
	if err := c.Handle(peer.ID, peer.Addr.Addr(), proto.DHTMessage{Type: proto.DHTStore, TxID: 1, Sender: peer.Addr, Record: rec}, testNow); err != nil {
		t.Fatal(err)
	}
	if err := c.Handle(peer.ID, peer.Addr.Addr(), proto.DHTMessage{Type: proto.DHTFindValue, TxID: 2, Sender: peer.Addr, Target: proto.NodeID(key)}, testNow); err != nil {
		t.Fatal(err)
	}
	if err := c.Handle(peer.ID, peer.Addr.Addr(), proto.DHTMessage{Type: proto.DHTFindNode, TxID: 3, Sender: peer.Addr, Target: peer.ID}, testNow); err != nil {
		t.Fatal(err)
	}
	sends, _ := c.Ready()
	if len(sends) != 3 {
		t.Fatalf("%d answers, want 3", len(sends))
	}
	if m := sends[0].Msg; m.Type != proto.DHTStored || m.Status != proto.StoreOK || m.TxID != 1 {
		t.Errorf("STORE answer %+v", m)
	}
	if m := sends[1].Msg; m.Type != proto.DHTValue || len(m.Records) != 1 || m.Records[0].ORDB != peer.ID || m.TxID != 2 {
		t.Errorf("FIND_VALUE answer %v with %d records", m.Type, len(m.Records))
	}
	if m := sends[2].Msg; m.Type != proto.DHTNodes || len(m.Contacts) != 0 {
		t.Errorf("FIND_NODE answer %v with %d contacts (the asker must be left out)", m.Type, len(m.Contacts))
	}
	for _, s := range sends {
		if err := s.Msg.Validate(); err != nil {
			t.Errorf("%v answer does not validate: %v", s.Msg.Type, err)
		}
	}
	// FIND_PEER: the bridge registers the asker with its onion key and
	// answers with itself at least.
	if err := c.Handle(peer.ID, peer.Addr.Addr(), proto.DHTMessage{Type: proto.DHTFindPeer, TxID: 4, Sender: peer.Addr,
		Peer: proto.DBPeer{ID: peer.ID, Addr: peer.Addr, OnionKey: peer.OnionKey}}, testNow); err != nil {
		t.Fatal(err)
	}
	sends, _ = c.Ready()
	if len(sends) != 1 || sends[0].Msg.Type != proto.DHTFoundPeer || sends[0].Msg.Found.Validate() != nil {
		t.Fatalf("FIND_PEER answer %+v", sends)
	}
	if e, ok := c.table.Get(peer.ID); !ok || len(e.OnionKey) != proto.OnionKeySize {
		t.Fatalf("asker not registered with its onion key")
	}
}

func TestCoreTimeouts(t *testing.T) {
	c := testCore(t, 0)
	peer := testIdentity(t, 1)
	c.Handle(peer.ID, peer.Addr.Addr(), proto.DHTMessage{Type: proto.DHTPing, TxID: 1, Sender: peer.Addr}, testNow)
	c.Ready()
	op, err := c.FindValue(proto.HashName{3}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if c.Pending() != 1 {
		t.Fatalf("pending %d", c.Pending())
	}
	c.Tick(testNow.Add(c.cfg.RPCTimeout - time.Millisecond))
	if _, res := c.Ready(); len(res) != 0 {
		t.Fatalf("finished before the timeout")
	}
	c.Tick(testNow.Add(c.cfg.RPCTimeout))
	_, res := c.Ready()
	if len(res) != 1 || res[0].Op != op || len(res[0].Closest) != 0 || c.Pending() != 0 {
		t.Fatalf("after timeout: %+v pending %d", res, c.Pending())
	}
	if e, ok := c.table.Get(peer.ID); !ok || e.Fails != 1 {
		t.Fatalf("timeout not counted against the contact")
	}
}

func TestCoreProvideNeedsKey(t *testing.T) {
	id := testIdentity(t, 0)
	id.Key = nil
	c, err := NewCore(DefaultConfig(), id, seedFrom(1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Provide(proto.HashName{1}, 0, false, testNow); !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("Provide without a key: %v", err)
	}
	id2 := testIdentity(t, 1)
	id2.ID = proto.NodeID{1}
	if _, err := NewCore(DefaultConfig(), id2, seedFrom(1)); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("ID not matching the key: %v", err)
	}
}

// TestContactPoolBalance: the simulator's workers' pools are evened out
// without losing or duplicating anything they hold.
func TestContactPoolBalance(t *testing.T) {
	pools := []*contactPool{{}, {}, {}}
	seen := map[*proto.DHTContact]bool{}
	for i, n := range []int{10, 0, 3} {
		for range n {
			b := make([]proto.DHTContact, 1, 8)
			seen[&b[0]] = true
			pools[i].put(b)
		}
		for range n / 2 {
			pools[i].putCands(candBuf{make([]candidate, 0, 4), make([]uint64, 0, 4)})
		}
	}
	balance(pools)
	got := map[*proto.DHTContact]bool{}
	for _, p := range pools {
		if len(p.free) < 4 || len(p.free) > 5 {
			t.Errorf("pool holds %d contact lists after balancing 13 over 3", len(p.free))
		}
		if len(p.cands) != 2 && len(p.cands) != 1 && len(p.cands) != 3 {
			t.Errorf("pool holds %d candidate lists", len(p.cands))
		}
		for _, b := range p.free {
			if len(b) != 0 || got[&b[:1][0]] {
				t.Fatalf("a list handed out twice or not emptied")
			}
			got[&b[:1][0]] = true
		}
	}
	if len(got) != len(seen) {
		t.Fatalf("%d lists after balancing, %d before", len(got), len(seen))
	}
	for p := range got {
		if !seen[p] {
			t.Fatal("a list that was never put")
		}
	}
}
