// Package linktest provides in-memory links for tests and benchmarks, as
// wireguard-go's conn/bindtest does for its Bind: a Net of nodes whose
// Conns carry cells by channel instead of TLS over TCP. Code above the link
// layer (the circuit switch, DHT and ORDB tests) runs on it unchanged: a
// node's Dialer hands out link.Conns, and arriving cells go to the
// link.Handlers the node set, as with a link.Links.
//
// Each direction of a link is a bounded queue of cells with one goroutine
// delivering them, in order, to the receiving node's handlers: a slow
// handler back-pressures its own link only, as on a real link. PADDING
// cells are dropped on arrival. There is no TLS, no timeout and no
// keepalive.
package linktest

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"veil/circuits/link"
	"veil/proto"
)

// QueueCells is how many cells each direction of a link holds before
// SendCell blocks and TrySendCell fails.
const QueueCells = 512

// Errors of the in-memory network.
var (
	ErrNoNode    = errors.New("linktest: no such node")
	ErrNetClosed = errors.New("linktest: net closed")
)

// Net is an in-memory network. Nodes join with Node; links between them
// are made on first Dial and last until closed. Safe for concurrent use.
type Net struct {
	mu     sync.Mutex
	nodes  map[proto.NodeID]*Node
	links  map[[2]proto.NodeID]*Conn // [from, to] -> from's end
	closed bool
	wg     sync.WaitGroup // delivery goroutines
}

// NewNet returns an empty network.
func NewNet() *Net {
	return &Net{nodes: map[proto.NodeID]*Node{}, links: map[[2]proto.NodeID]*Conn{}}
}

// Node is one node's place on a Net: its Dialer, and the handlers its
// links deliver to.
type Node struct {
	net *Net
	id  proto.NodeID

	mu sync.Mutex
	h  link.Handlers
}

var _ link.Dialer = (*Node)(nil)

// Node adds the node id to the network (or returns it if it is there).
func (n *Net) Node(id proto.NodeID) *Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	if nd := n.nodes[id]; nd != nil {
		return nd
	}
	nd := &Node{net: n, id: id}
	n.nodes[id] = nd
	return nd
}

// ID is the node's ID.
func (nd *Node) ID() proto.NodeID { return nd.id }

// SetHandlers installs the handlers the node's links deliver to. Links
// made before the call deliver to the new handlers too.
func (nd *Node) SetHandlers(h link.Handlers) {
	nd.mu.Lock()
	nd.h = h
	nd.mu.Unlock()
}

func (nd *Node) handlers() link.Handlers {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.h
}

// Dial returns the link from this node to id, making it (and the peer's
// end, inbound) on first use. addr is ignored: nodes are found by ID.
func (nd *Node) Dial(ctx context.Context, id proto.NodeID, addr string) (link.Conn, error) {
	c, err := nd.Link(id)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Link is Dial returning the concrete *Conn.
func (nd *Node) Link(id proto.NodeID) (*Conn, error) {
	n := nd.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, ErrNetClosed
	}
	if c := n.links[[2]proto.NodeID{nd.id, id}]; c != nil {
		return c, nil
	}
	peer := n.nodes[id]
	if peer == nil || id == nd.id {
		return nil, fmt.Errorf("%w: %s", ErrNoNode, id.Short())
	}
	p := &pair{quit: make(chan struct{})}
	ab := &Conn{net: n, pair: p, from: nd, to: peer, q: make(chan item, QueueCells)}
	ba := &Conn{net: n, pair: p, from: peer, to: nd, inbound: true, q: make(chan item, QueueCells)}
	ab.other, ba.other = ba, ab
	n.links[[2]proto.NodeID{nd.id, id}] = ab
	n.links[[2]proto.NodeID{id, nd.id}] = ba
	n.wg.Add(2)
	go ab.deliver()
	go ba.deliver()
	return ab, nil
}

// Close closes every link, calling each end's Closed handler, and waits
// for the delivery goroutines. Dial fails afterwards. Idempotent.
func (n *Net) Close() {
	n.mu.Lock()
	n.closed = true
	var ends []*Conn
	for _, c := range n.links {
		if !c.inbound {
			ends = append(ends, c)
		}
	}
	n.mu.Unlock()
	for _, c := range ends {
		c.Close()
	}
	n.wg.Wait()
}

// item is one queued cell: fixed or variable (payload copied).
type item struct {
	cell *proto.Cell
	v    proto.VarCell
}

// pair is what both ends of a link share: whether, and by which end, it
// was closed.
type pair struct {
	quit   chan struct{} // closed when the link closes
	once   sync.Once
	closer *Conn // the end Close was called on; set before quit closes
}

// Conn is one end of an in-memory link. It implements link.Conn, and
// SendVar and Close as *link.Link does.
type Conn struct {
	net *Net
	*pair
	from, to *Node
	other    *Conn // the peer's end
	inbound  bool
	q        chan item // cells from this end to the other
}

var _ link.Conn = (*Conn)(nil)

// Peer is the ID of the node at the other end.
func (c *Conn) Peer() proto.NodeID { return c.to.id }

// Inbound reports whether the other end dialed.
func (c *Conn) Inbound() bool { return c.inbound }

// Done is closed once the link is closed.
func (c *Conn) Done() <-chan struct{} { return c.quit }

// SendCell queues cell for the peer, blocking while the queue is full. It
// takes ownership of cell; once the link is closed it fails with
// link.ErrClosed.
func (c *Conn) SendCell(cell *proto.Cell) error {
	if err := c.send(item{cell: cell}, true); err != nil {
		proto.PutCell(cell)
		return err
	}
	return nil
}

// TrySendCell is SendCell failing with link.ErrQueueFull instead of
// blocking.
func (c *Conn) TrySendCell(cell *proto.Cell) error {
	if err := c.send(item{cell: cell}, false); err != nil {
		proto.PutCell(cell)
		return err
	}
	return nil
}

// SendVar queues a variable-length cell, copying its payload.
func (c *Conn) SendVar(v proto.VarCell) error {
	if !v.Command.Known() || !v.Command.IsVariable() || len(v.Payload) > proto.MaxVarPayload {
		return fmt.Errorf("%w: var cell %v of %d bytes", link.ErrBadCell, v.Command, len(v.Payload))
	}
	v.Payload = append([]byte(nil), v.Payload...)
	return c.send(item{v: v}, true)
}

func (c *Conn) send(it item, block bool) error {
	select {
	case <-c.quit:
		return link.ErrClosed
	default:
	}
	if !block {
		select {
		case c.q <- it:
			return nil
		default:
			return link.ErrQueueFull
		}
	}
	select {
	case c.q <- it:
		return nil
	case <-c.quit:
		return link.ErrClosed
	}
}

// Close closes the link, both ends, at once: queued cells are dropped,
// this end's node gets Closed(link.ErrClosed) and the peer's
// Closed(link.ErrClosedByPeer). A later Dial between the two nodes makes a
// new link. Idempotent.
func (c *Conn) Close() error {
	c.once.Do(func() {
		n := c.net
		n.mu.Lock()
		for _, end := range []*Conn{c, c.other} {
			k := [2]proto.NodeID{end.from.id, end.to.id}
			if n.links[k] == end {
				delete(n.links, k)
			}
		}
		n.mu.Unlock()
		c.closer = c
		close(c.quit)
	})
	return nil
}

// deliver hands the cells sent on c to the other end's node, in order,
// until the link closes; then it drops what is left and reports the close
// to that node.
func (c *Conn) deliver() {
	defer c.net.wg.Done()
	recv := c.other // handlers see cells arrive on the receiving end
	for open := true; open; {
		select {
		case <-c.quit: // closed: deliver nothing more, even if queued
			open = false
			continue
		default:
		}
		select {
		case it := <-c.q:
			h := c.to.handlers()
			switch {
			case it.cell == nil:
				if h.Var != nil {
					h.Var(recv, it.v)
				}
			case it.cell.Command() == proto.CmdPadding || h.Cell == nil:
				proto.PutCell(it.cell)
			default:
				h.Cell(recv, it.cell)
			}
		case <-c.quit:
			open = false
		}
	}
	for drained := false; !drained; {
		select {
		case it := <-c.q:
			if it.cell != nil {
				proto.PutCell(it.cell)
			}
		default:
			drained = true
		}
	}
	err := link.ErrClosedByPeer
	if c.closer == recv {
		err = link.ErrClosed
	}
	if h := c.to.handlers(); h.Closed != nil {
		h.Closed(recv, err)
	}
}
