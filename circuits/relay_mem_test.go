package circuits

import (
	"net/netip"
	"testing"
	"time"

	"veil/circuits/link"
	"veil/circuits/link/linktest"
	"veil/circuits/onion"
	"veil/proto"
)

// newMemNodes makes n switches on one in-memory network; opts adjust
// their configuration.
func newMemNodes(t testing.TB, n int, opts ...func(*SwitchConfig)) []*cnode {
	t.Helper()
	mn := linktest.NewNet()
	nodes := make([]*cnode, n)
	for i := range nodes {
		id, err := NewEphemeralIdentity()
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultSwitchConfig()
		cfg.AllowPrivateExtend = true // the descriptors name 127.0.0.1
		for _, o := range opts {
			o(&cfg)
		}
		mnode := mn.Node(id.ID)
		sw, err := NewSwitch(id, mnode, cfg)
		if err != nil {
			t.Fatal(err)
		}
		desc, err := id.Descriptor([]netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")}, cfg.Flags, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		sw.Handle("echo", echoService)
		mnode.SetHandlers(link.Handlers{Cell: sw.HandleCell, Closed: sw.HandleClosed})
		nodes[i] = &cnode{id: id, sw: sw, desc: desc, cfg: cfg}
	}
	t.Cleanup(func() {
		for _, cn := range nodes {
			cn.sw.Close()
		}
		mn.Close()
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
			return c.ep.sendControl(0, false, proto.RelayBegin, lastHopStreams+1, beginData("echo"))
		}},
		{"unsolicited circuit SENDME", 1, func(c *Circuit, nodes []*cnode) error {
			sm := proto.Sendme{Version: proto.SendmeVersionTag, Data: make([]byte, onion.TagSize)}
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
	return extend2To(t, n.id.ID, n.desc.OnionKey, n.desc.Addrs[0])
}
