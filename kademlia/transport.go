package kademlia

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	"veil/proto"
)

// Transport carries encoded DHT RPCs (proto.DHTMessage) between nodes. In
// a veil node they travel over circuits links as proto.CmdDHT var cells;
// MemNetwork carries them in memory for tests.
type Transport interface {
	// Send delivers payload to node to, over an existing link to to.ID or
	// a new one to to.Addr. It may block while dialing: Node calls it
	// from its sender goroutines, never from Run. It must not keep
	// payload after returning.
	Send(ctx context.Context, to proto.DHTContact, payload []byte) error
}

// MemNetwork connects Nodes in memory: Send hands the payload straight to
// the receiving node's Deliver. Nodes can be taken down and back up.
type MemNetwork struct {
	mu    sync.Mutex // guards nodes and down
	nodes map[proto.NodeID]*Node
	down  map[proto.NodeID]bool
}

// NewMemNetwork returns an empty network.
func NewMemNetwork() *MemNetwork {
	return &MemNetwork{nodes: make(map[proto.NodeID]*Node), down: make(map[proto.NodeID]bool)}
}

// Attach makes n reachable under its ID.
func (m *MemNetwork) Attach(n *Node) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nodes[n.ID()] = n
}

// SetDown makes id unreachable (down = true) or reachable again: messages
// to or from it are lost without notice.
func (m *MemNetwork) SetDown(id proto.NodeID, down bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.down[id] = down
}

// Transport returns the transport node self sends with.
func (m *MemNetwork) Transport(self proto.NodeID) Transport {
	return &memTransport{net: m, self: self}
}

type memTransport struct {
	net  *MemNetwork
	self proto.NodeID
}

var _ Transport = (*memTransport)(nil)

func (t *memTransport) Send(ctx context.Context, to proto.DHTContact, payload []byte) error {
	t.net.mu.Lock()
	n, ok := t.net.nodes[to.ID]
	var ip netip.Addr // the sender's address, as a link's remote address would give it
	if self, ok := t.net.nodes[t.self]; ok {
		ip = self.id.Addr.Addr()
	}
	down := t.net.down[to.ID] || t.net.down[t.self]
	t.net.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %v not attached", ErrUnreachable, to.ID.Short())
	}
	if down {
		return nil // lost without notice, as with a node gone
	}
	return n.Deliver(t.self, ip, payload)
}
