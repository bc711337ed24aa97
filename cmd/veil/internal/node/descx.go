package node

import (
	"errors"
	"fmt"

	"veil/proto"
)

// A node learns others' signed descriptors (which circuit building needs)
// straight from them, over the link that authenticated them: it asks each
// peer its DHT traffic links it with. proto has no message for this yet,
// so the exchange rides in the DHT var cell with type bytes far above the
// DHT's own (1..10), which a kademlia.Node that does not know them rejects:
//
//	request: [descRequest 1B]
//	answer:  [descAnswer 1B][proto.NodeDescriptor]
//
// The answer's descriptor must be the link peer's own: a node vouches only
// for itself.
const (
	descRequest byte = 0xF0
	descAnswer  byte = 0xF1
)

// errDescPeer: a descriptor answer named another node than the link's peer.
var errDescPeer = errors.New("node: descriptor of another node than the link peer")

// isDescMsg reports whether a DHT var cell's payload is a descriptor exchange.
func isDescMsg(p []byte) bool { return len(p) > 0 && (p[0] == descRequest || p[0] == descAnswer) }

// appendDescAnswer encodes the answer carrying d.
func appendDescAnswer(b []byte, d proto.NodeDescriptor) []byte {
	return d.Append(append(b, descAnswer))
}

// parseDescAnswer decodes an answer received from peer; it does not check
// the signature's validity window (the caller verifies at its own time).
func parseDescAnswer(p []byte, peer proto.NodeID) (proto.NodeDescriptor, error) {
	if len(p) == 0 || p[0] != descAnswer {
		return proto.NodeDescriptor{}, fmt.Errorf("node: not a descriptor answer")
	}
	d, err := proto.ParseNodeDescriptor(p[1:])
	if err != nil {
		return d, err
	}
	if d.ID != peer {
		return d, fmt.Errorf("%w: %s from %s", errDescPeer, d.ID.Short(), peer.Short())
	}
	return d, nil
}
