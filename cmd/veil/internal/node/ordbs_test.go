package node

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"
	"time"

	"veil/circuits"
	"veil/ordb"
	"veil/proto"
)

// TestOwnORDBs: a node's own ORDBs are the ORDB-flagged nodes closest to
// its ID, at most six, never itself nor a node without an address; with
// fewer ORDBs known, all of them.
func TestOwnORDBs(t *testing.T) {
	self, err := circuits.NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{id: self, dir: newDirectory(time.Now)}
	add := func(flags uint8, addr bool) proto.NodeID {
		id, err := circuits.NewEphemeralIdentity()
		if err != nil {
			t.Fatal(err)
		}
		var addrs []netip.AddrPort
		if addr {
			addrs = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}
		}
		d, err := id.Descriptor(addrs, flags, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		n.dir.Add(d)
		return d.ID
	}
	// Self in the directory, relays and address-less ORDBs: never chosen.
	selfDesc, err := self.Descriptor([]netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:8")}, proto.FlagORDB, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	n.dir.Add(selfDesc)
	var never []proto.NodeID
	for range 5 {
		never = append(never, add(proto.FlagRelay, true), add(proto.FlagORDB, false))
	}
	if got := n.ownORDBs(); len(got) != 0 {
		t.Fatalf("own ORDBs among relays and address-less nodes: %d", len(got))
	}
	var ordbs []proto.NodeID
	for range 3 {
		ordbs = append(ordbs, add(proto.FlagORDB|proto.FlagRelay, true))
	}
	if got := ids(n.ownORDBs()); len(got) != 3 || !sameSet(got, ordbs) {
		t.Fatalf("with 3 ORDBs known: %d chosen", len(got))
	}
	for range 20 {
		ordbs = append(ordbs, add(proto.FlagORDB, true))
	}
	got := ids(n.ownORDBs())
	slices.SortFunc(ordbs, func(a, b proto.NodeID) int {
		da, db := xorDist(self.ID, a), xorDist(self.ID, b)
		return bytes.Compare(da[:], db[:])
	})
	if len(got) != ordb.MinORDBs || !slices.Equal(got, ordbs[:ordb.MinORDBs]) {
		t.Fatalf("chose %v, want the %d closest %v", got, ordb.MinORDBs, ordbs[:ordb.MinORDBs])
	}
	for _, id := range append(never, self.ID) {
		if slices.Contains(got, id) {
			t.Fatalf("chose %v", id.Short())
		}
	}
}

func ids(ds []proto.NodeDescriptor) []proto.NodeID {
	out := make([]proto.NodeID, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

func sameSet(a, b []proto.NodeID) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}
