package node

import (
	"context"
	"errors"
	"fmt"

	"veil/circuits/link"
	"veil/kademlia"
	"veil/proto"
)

// linksTransport carries DHT RPCs over links as proto.CmdDHT var cells: on
// the existing link to the peer if there is one (answers go back on the
// link the request came on), else on a new one.
type linksTransport struct{ n *Node }

var _ kademlia.Transport = linksTransport{}

// Send delivers one RPC.
func (t linksTransport) Send(ctx context.Context, to proto.DHTContact, payload []byte) error {
	l, err := t.n.link(ctx, to)
	if err != nil {
		return err
	}
	return l.SendVar(proto.VarCell{Command: proto.CmdDHT, Payload: payload})
}

// link returns the link to c, dialing it when there is none. A private
// address is dialed only when allow_private is set; an anonymous node
// dials only its bridges (the guard, anonymous.go).
func (n *Node) link(ctx context.Context, c proto.DHTContact) (*link.Link, error) {
	if l := n.links.Lookup(c.ID); l != nil {
		return l, nil
	}
	if !c.Addr.IsValid() {
		return nil, fmt.Errorf("%w: no link to %v and no address", kademlia.ErrUnreachable, c.ID.Short())
	}
	if err := n.checkDial(c.ID, c.Addr.String()); err != nil {
		return nil, fmt.Errorf("%w: %v", kademlia.ErrUnreachable, err)
	}
	if a := c.Addr.Addr(); !n.cfg.Load().AllowPrivate && (a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsUnspecified()) {
		return nil, fmt.Errorf("%w: %v has a private address (allow_private is off)", kademlia.ErrUnreachable, c.ID.Short())
	}
	return n.links.Get(ctx, c.ID, c.Addr.String())
}

// varConn is a link that also carries var cells: *link.Link, or an
// in-memory link in tests.
type varConn interface {
	link.Conn
	SendVar(v proto.VarCell) error
}

// handleVar receives var cells from links (on the link's read goroutine).
// A DHT cell holds either a Kademlia RPC, for the DHT node, or a message of
// the descriptor exchange, handled here (descx.go). The parse only picks
// the receiver: kademlia.Node takes the RPC's bytes and parses them on its
// own goroutine, a microsecond well spent on keeping its input one kind.
func (n *Node) handleVar(c link.Conn, v proto.VarCell) {
	l, ok := c.(varConn)
	if v.Command != proto.CmdDHT || !ok {
		return
	}
	m, err := proto.ParseDHTMessage(v.Payload)
	if err != nil {
		n.log.Debug("DHT cell refused", "peer", l.Peer().Short(), "err", err)
		return
	}
	if isDescMsg(m) {
		n.handleDesc(l, m)
		return
	}
	dht := n.dhtReady.Load()
	if dht == nil {
		return
	}
	n.dir.Up(l.Peer())
	if n.obs != nil {
		n.observeDHT(l.Peer(), m)
	}
	_ = dht.Deliver(l.Peer(), v.Payload) // copies the payload
	// Whoever we speak DHT with may be a hop of our circuits: learn its
	// descriptor. Clients do not answer, and asking costs one small cell.
	if n.dir.shouldAsk(l.Peer()) {
		n.sendDesc(l, n.descRequest())
	}
}

// descRequest is our DESCRIPTOR_REQUEST.
func (n *Node) descRequest() proto.DHTMessage {
	var self proto.NodeDescriptor
	if d := n.desc.Load(); d != nil {
		self = *d
	}
	return descRequest(self)
}

// sendDesc sends a descriptor message off the link's read goroutine (a
// send blocks while the link's queue is full; blocking the reader could
// stall both directions). At most descSends are in flight; beyond that
// the message is dropped, which costs only a later retry.
func (n *Node) sendDesc(l varConn, m proto.DHTMessage) {
	select {
	case n.descSem <- struct{}{}:
	default:
		return
	}
	payload := m.Append(make([]byte, 0, m.Len()))
	n.descWG.Add(1)
	go func() {
		defer n.descWG.Done()
		defer func() { <-n.descSem }()
		_ = l.SendVar(proto.VarCell{Command: proto.CmdDHT, Payload: payload})
	}()
}

// handleDesc answers a descriptor request with our own, or keeps the
// descriptor a peer sent about itself.
func (n *Node) handleDesc(l varConn, m proto.DHTMessage) {
	switch m.Type {
	case proto.DHTDescriptorRequest:
		if d := n.desc.Load(); d != nil {
			n.sendDesc(l, descAnswer(m, *d))
		}
	case proto.DHTDescriptor:
		d, err := peerDescriptor(m, l.Peer())
		if err == nil {
			err = d.Verify(n.now())
		}
		if err != nil {
			n.log.Debug("descriptor refused", "peer", l.Peer().Short(), "err", err)
			return
		}
		n.dir.Add(d)
		n.dir.Up(d.ID)
	}
}

// handleClosed is told of every link that ended. One the peer's side
// closed or broke, with no other link to that peer left, takes the peer
// out of paths for a while: it most likely went away, and circuits
// through it would fail.
func (n *Node) handleClosed(l link.Conn, err error) {
	n.sw.HandleClosed(l, err)
	if !errors.Is(err, link.ErrClosed) && n.links.Lookup(l.Peer()) == nil {
		n.dir.Down(l.Peer())
	}
}

// askDescriptor requests c's descriptor over a link to it (dialed if needed).
func (n *Node) askDescriptor(ctx context.Context, c proto.DHTContact) {
	if c.ID == n.id.ID || !n.dir.shouldAsk(c.ID) {
		return
	}
	l, err := n.link(ctx, c)
	if err != nil {
		n.log.Debug("link for a descriptor", "peer", c.ID.Short(), "err", err)
		return
	}
	m := n.descRequest()
	_ = l.SendVar(proto.VarCell{Command: proto.CmdDHT, Payload: m.Append(make([]byte, 0, m.Len()))})
}
