package circuits

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"veil/circuits/onion"
	"veil/proto"
)

// memLink is one end of an in-memory link: cells sent on it are handed, by
// one goroutine per direction, to the peer switch's handler. It stands in
// for *Link where a test or benchmark is about the circuit layer alone.
type memLink struct {
	peer    proto.NodeID
	inbound bool
	q       chan *proto.Cell
	done    chan struct{}
}

var _ cellLink = (*memLink)(nil)

var errMemClosed = errors.New("memlink closed")

func (l *memLink) Peer() proto.NodeID { return l.peer }
func (l *memLink) Inbound() bool      { return l.inbound }

func (l *memLink) SendCell(c *proto.Cell) error {
	select {
	case l.q <- c:
		return nil
	case <-l.done:
		proto.PutCell(c)
		return errMemClosed
	}
}

func (l *memLink) TrySendCell(c *proto.Cell) error {
	select {
	case l.q <- c:
		return nil
	default:
		proto.PutCell(c)
		return ErrQueueFull
	}
}

// memNet connects switches by memLinks, made on first use.
type memNet struct {
	mu    sync.Mutex
	sws   map[proto.NodeID]*Switch
	links map[[2]proto.NodeID]*memLink // [from, to] -> from's end
	done  chan struct{}
	wg    sync.WaitGroup
}

func newMemNet() *memNet {
	return &memNet{sws: map[proto.NodeID]*Switch{}, links: map[[2]proto.NodeID]*memLink{}, done: make(chan struct{})}
}

type memDialer struct {
	n    *memNet
	self proto.NodeID
}

func (d memDialer) getLink(ctx context.Context, id proto.NodeID, addr string) (cellLink, error) {
	n := d.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if l := n.links[[2]proto.NodeID{d.self, id}]; l != nil {
		return l, nil
	}
	if n.sws[id] == nil {
		return nil, errors.New("memnet: no such node")
	}
	ab := &memLink{peer: id, q: make(chan *proto.Cell, 512), done: n.done}
	ba := &memLink{peer: d.self, inbound: true, q: make(chan *proto.Cell, 512), done: n.done}
	n.links[[2]proto.NodeID{d.self, id}] = ab
	n.links[[2]proto.NodeID{id, d.self}] = ba
	pump := func(from *memLink, to *Switch, as *memLink) {
		defer n.wg.Done()
		for {
			select {
			case c := <-from.q:
				to.handleCell(as, c)
			case <-n.done:
				return
			}
		}
	}
	n.wg.Add(2)
	go pump(ab, n.sws[id], ba)
	go pump(ba, n.sws[d.self], ab)
	return ab, nil
}

func (n *memNet) close() {
	close(n.done)
	n.wg.Wait()
}

// newMemNodes makes n switches on one memNet.
func newMemNodes(t testing.TB, n int) []*cnode {
	t.Helper()
	mn := newMemNet()
	nodes := make([]*cnode, n)
	for i := range nodes {
		id, err := NewEphemeralIdentity()
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultSwitchConfig()
		sw, err := newSwitch(id, memDialer{mn, id.ID}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		desc, err := id.Descriptor([]netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")}, cfg.Flags, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		sw.Handle("echo", echoService)
		mn.mu.Lock()
		mn.sws[id.ID] = sw
		mn.mu.Unlock()
		nodes[i] = &cnode{id: id, sw: sw, desc: desc, cfg: cfg}
	}
	t.Cleanup(func() {
		for _, cn := range nodes {
			cn.sw.Close()
		}
		mn.close()
	})
	return nodes
}

func TestCircuitOverMemLinks(t *testing.T) {
	noLeaks(t)
	nodes := newMemNodes(t, 4)
	c := build(t, nodes[0], nodes[1], nodes[2], nodes[3])
	if err := echoCheck(c, 200000, 3); err != nil {
		t.Fatal(err)
	}
}

func TestRelayProtocolViolations(t *testing.T) {
	cases := []struct {
		name string
		hops int
		send func(c *Circuit, nodes []*cnode) error
	}{
		{"EXTEND2 in RELAY", 1, func(c *Circuit, nodes []*cnode) error {
			ext := extendTo(t, nodes[2])
			return c.ep.sendControl(0, false, proto.RelayExtend2, 0, ext)
		}},
		{"EXTEND2 past an existing next hop", 2, func(c *Circuit, nodes []*cnode) error {
			return c.ep.sendControl(0, true, proto.RelayExtend2, 0, extendTo(t, nodes[3]))
		}},
		{"garbage EXTEND2", 1, func(c *Circuit, nodes []*cnode) error {
			return c.ep.sendControl(0, true, proto.RelayExtend2, 0, []byte{1, 2, 3})
		}},
		{"EXTENDED2 towards the last hop", 1, func(c *Circuit, nodes []*cnode) error {
			return c.ep.sendControl(0, false, proto.RelayExtended2, 0, []byte{0, 0})
		}},
		{"DATA on stream 0", 1, func(c *Circuit, nodes []*cnode) error {
			return c.ep.sendControl(0, false, proto.RelayData, 0, []byte("x"))
		}},
		{"BEGIN with a stream ID of the last hop's half", 1, func(c *Circuit, nodes []*cnode) error {
			return c.ep.sendControl(0, false, proto.RelayBegin, lastHopStreams+1, onionBegin("echo"))
		}},
		{"unsolicited circuit SENDME", 1, func(c *Circuit, nodes []*cnode) error {
			sm := onion.Sendme{Version: onion.SendmeVersion, Data: make([]byte, onion.TagSize)}
			return c.ep.sendControl(0, false, proto.RelaySendme, 0, sm.Append(nil))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			nodes := newMemNodes(t, 4)
			c := build(t, nodes[0], nodes[1:1+tc.hops]...)
			if err := tc.send(c, nodes); err != nil {
				t.Fatal(err)
			}
			waitClosed(t, c)
			if c.Reason() != proto.DestroyProtocol {
				t.Fatalf("closed with %v", c.Reason())
			}
			for _, n := range nodes[1:] {
				waitUntil(t, "relays to drop the circuit", func() bool { return n.sw.Joined() == 0 })
			}
		})
	}
}

func extendTo(t *testing.T, n *cnode) []byte {
	_, create, err := onion.NewClientHandshake(nil, n.id.ID, n.desc.OnionKey)
	if err != nil {
		t.Fatal(err)
	}
	e := onion.Extend2{Next: n.id.ID, Addr: n.desc.Addrs[0], Create: create}
	return e.Append(nil)
}

func onionBegin(dest string) []byte { return onion.Begin{Dest: dest}.Append(nil) }
