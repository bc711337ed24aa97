package node

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"

	"veil/proto"
)

// A node learns others' signed descriptors (which circuit building needs)
// straight from them, over the link that authenticated them: it sends
// proto.DHTDescriptorRequest to each peer its DHT traffic links it with,
// and the peer answers proto.DHTDescriptor. Both ride in the DHT var cell
// beside Kademlia's RPCs; handleVar hands them here and the rest to
// kademlia.Node.
//
// The answer's descriptor must be the link peer's own: a node vouches
// only for itself. An answer nobody asked for is kept all the same when
// it is the peer's own and verifies: it is what the peer would have said.

// errDescPeer: a descriptor answer named another node than the link's peer.
var errDescPeer = errors.New("node: descriptor of another node than the link peer")

// descRequest is a DESCRIPTOR_REQUEST from a node reachable at from
// (invalid for a client).
func descRequest(from proto.NodeDescriptor) proto.DHTMessage {
	m := proto.DHTMessage{Type: proto.DHTDescriptorRequest, TxID: rand.Uint64()}
	if len(from.Addrs) > 0 {
		m.Sender = from.Addrs[0]
	}
	return m
}

// descAnswer is the answer to req carrying our own descriptor d.
func descAnswer(req proto.DHTMessage, d proto.NodeDescriptor) proto.DHTMessage {
	return proto.DHTMessage{Type: proto.DHTDescriptor, TxID: req.TxID, Descriptor: d}
}

// peerDescriptor takes the descriptor of an answer received from peer,
// copied out of the received buffer. It does not check the signature
// (the caller verifies at its own time).
func peerDescriptor(m proto.DHTMessage, peer proto.NodeID) (proto.NodeDescriptor, error) {
	if m.Type != proto.DHTDescriptor {
		return proto.NodeDescriptor{}, fmt.Errorf("node: %v is not a descriptor answer", m.Type)
	}
	d := m.Descriptor
	if d.ID != peer {
		return proto.NodeDescriptor{}, fmt.Errorf("%w: %s from %s", errDescPeer, d.ID.Short(), peer.Short())
	}
	// The directory keeps it: let it alias no link buffer.
	d.IdentityKey = bytes.Clone(d.IdentityKey)
	d.OnionKey = bytes.Clone(d.OnionKey)
	d.Signature = bytes.Clone(d.Signature)
	d.Addrs = slices.Clone(d.Addrs)
	return d, nil
}

// isDescMsg reports whether m belongs to the descriptor exchange rather
// than to Kademlia.
func isDescMsg(m proto.DHTMessage) bool {
	return m.Type == proto.DHTDescriptorRequest || m.Type == proto.DHTDescriptor
}
