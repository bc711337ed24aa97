package circuits

import (
	"net/netip"
	"testing"

	"veil/circuits/onion"
	"veil/proto"
)

// Cells as a peer would send them, for tests that play a neighbour of a
// switch or a core by hand.

// newCell is a pooled cell with circuit ID id and command cmd, its payload
// zero.
func newCell(id uint32, cmd proto.Command) *proto.Cell {
	c := proto.GetCell()
	c.SetCircID(id)
	c.SetCommand(cmd)
	return c
}

// create2To starts a client handshake with node to and returns it with
// the CREATE2 cell that carries it on circuit id.
func create2To(t testing.TB, id uint32, to *Identity) (*onion.ClientHandshake, *proto.Cell) {
	t.Helper()
	hs, create, err := onion.NewClientHandshake(nil, to.ID, to.OnionPublic())
	if err != nil {
		t.Fatal(err)
	}
	c := newCell(id, proto.CmdCreate2)
	create.Append(c.Payload()[:0])
	return hs, c
}

// finishHop completes hs with the CREATED2 cell created (which it leaves
// to the caller) and returns the client's side of the hop.
func finishHop(t testing.TB, hs *onion.ClientHandshake, created *proto.Cell) *onion.Hop {
	t.Helper()
	body, err := proto.ParseCreated2(created.Payload())
	if err != nil {
		t.Fatal(err)
	}
	km, err := hs.Finish(body)
	if err != nil {
		t.Fatal(err)
	}
	return onion.NewHop(&km)
}

// sealedRelay is a relay cell on circuit id sealed by the origin for the
// one hop h: RELAY_EARLY if early.
func sealedRelay(t testing.TB, h *onion.Hop, id uint32, early bool, cmd proto.RelayCommand, stream uint16, data []byte) *proto.Cell {
	t.Helper()
	c := newCell(id, proto.CmdRelay)
	if early {
		c.SetCommand(proto.CmdRelayEarly)
	}
	if err := proto.PutRelay(c.PayloadArray(), proto.RelayHeader{Command: cmd, StreamID: stream}, data); err != nil {
		t.Fatal(err)
	}
	onion.SealForward([]*onion.Hop{h}, 0, c.PayloadArray())
	return c
}

// beginData is BEGIN relay data for dest.
func beginData(dest string) []byte { return proto.Begin{Dest: dest}.Append(nil) }

// extend2To is EXTEND2 relay data naming node id (onion key onionKey) at
// addr, with a fresh client handshake.
func extend2To(t testing.TB, id proto.NodeID, onionKey []byte, addr netip.AddrPort) []byte {
	t.Helper()
	_, create, err := onion.NewClientHandshake(nil, id, onionKey)
	if err != nil {
		t.Fatal(err)
	}
	return proto.Extend2{Next: id, Addr: addr, Create: create}.Append(nil)
}
