package kademlia

import (
	"testing"
	"time"

	"veil/proto"
)

// FuzzCoreHandle feeds arbitrary RPCs, from a peer the core knows and is
// waiting on, to a core: nothing panics, every answer it sends
// validates, and the table never holds more than it may.
func FuzzCoreHandle(f *testing.F) {
	peer := testIdentity(f, 1)
	rec := testRecord(peer, proto.HashName{7}, testNow.Add(time.Hour))
	seeds := []proto.DHTMessage{
		{Type: proto.DHTPing, TxID: 1, Sender: peer.Addr},
		{Type: proto.DHTFindNode, TxID: 2, Sender: peer.Addr, Target: proto.NodeID{7}},
		{Type: proto.DHTFindValue, TxID: 3, Sender: peer.Addr, Target: proto.NodeID{7}},
		{Type: proto.DHTStore, TxID: 4, Sender: peer.Addr, Record: rec},
		{Type: proto.DHTFindPeer, TxID: 5, Sender: peer.Addr, Peer: proto.DBPeer{ID: peer.ID, Addr: peer.Addr, OnionKey: peer.OnionKey}},
		{Type: proto.DHTNodes, TxID: 6, Contacts: []proto.DHTContact{identContact(testIdentity(f, 2))}},
		{Type: proto.DHTValue, TxID: 6, Records: []proto.ProviderRecord{rec}},
		{Type: proto.DHTStored, TxID: 6},
	}
	for _, m := range seeds {
		f.Add(m.Append(nil), uint8(0))
	}
	f.Fuzz(func(t *testing.T, b []byte, which uint8) {
		m, err := proto.ParseDHTMessage(b)
		if err != nil {
			return
		}
		c := testCore(t, 0)
		c.Handle(peer.ID, peer.Addr.Addr(), proto.DHTMessage{Type: proto.DHTPing, TxID: 1, Sender: peer.Addr}, testNow)
		// Put an RPC of each kind in flight and aim the message at one.
		c.FindValue(proto.HashName{7}, testNow)
		c.Provide(proto.HashName{8}, 1, false, testNow)
		c.Bootstrap([]proto.DHTContact{identContact(peer)}, testNow)
		sends, _ := c.Ready()
		var txids []uint64
		for _, s := range sends {
			if s.Msg.Type.IsRequest() {
				txids = append(txids, s.Msg.TxID)
			}
		}
		if len(txids) > 0 && !m.Type.IsRequest() {
			m.TxID = txids[int(which)%len(txids)]
		}
		_ = c.Handle(peer.ID, peer.Addr.Addr(), m, testNow)
		c.Tick(testNow.Add(time.Hour))
		sends, _ = c.Ready()
		for _, s := range sends {
			if err := s.Msg.Validate(); err != nil {
				t.Fatalf("core sent an invalid %v: %v", s.Msg.Type, err)
			}
		}
		if c.table.Len() > IDBits*c.cfg.K {
			t.Fatalf("table holds %d", c.table.Len())
		}
	})
}
