package link

import (
	"context"

	"veil/proto"
)

// Conn is one link as the layers above use it: the authenticated peer at
// the other end and a way to send it fixed cells. *Link implements it over
// TLS; package linktest implements it in memory, so the circuit layer can
// be tested and measured without sockets. Handlers receive the Conn a cell
// arrived on; answers go back on it.
type Conn interface {
	// Peer is the authenticated ID of the node at the other end.
	Peer() proto.NodeID
	// Inbound reports whether the peer opened the link.
	Inbound() bool
	// SendCell queues c for the peer, blocking while the link's queue is
	// full. It takes ownership of c in every case.
	SendCell(c *proto.Cell) error
	// TrySendCell is SendCell without blocking: it fails with
	// ErrQueueFull (and releases c) when the queue has no room.
	TrySendCell(c *proto.Cell) error
}

// Dialer gives the link to a node: the open one, or a new one dialed to
// addr, authenticated as id. *Links implements it over TLS; package
// linktest in memory.
type Dialer interface {
	Dial(ctx context.Context, id proto.NodeID, addr string) (Conn, error)
}

var (
	_ Conn   = (*Link)(nil)
	_ Dialer = (*Links)(nil)
)
