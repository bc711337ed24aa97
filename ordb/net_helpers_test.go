package ordb

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"veil/chunkstore"
	"veil/circuits"
	"veil/circuits/link"
	"veil/kademlia"
	"veil/proto"
)

// netNode is one node of an in-process veil network on 127.0.0.1 with
// real TLS links, switch, circuits and stores. An infrastructure node
// relays, runs the DHT over its links and the ORDB service (Relay); a
// peer (A, B, C) only builds circuits and answers, through Peer, what it
// advertised on them: it neither listens nor takes part in the DHT.
type netNode struct {
	name  string
	id    *circuits.Identity
	links *link.Links
	sw    *circuits.Switch
	desc  proto.NodeDescriptor
	dht   *kademlia.Node
	relay *Relay
	peer  *Peer
	store *chunkstore.Store
	circs staticCircuits
	dhtp  atomic.Pointer[kademlia.Node] // dht, for the link handlers
}

// staticCircuits is a CircuitSource of circuits the test built.
type staticCircuits struct {
	mu sync.Mutex
	cs []*circuits.Circuit
}

func (s *staticCircuits) FindCircuits() []*circuits.Circuit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*circuits.Circuit(nil), s.cs...)
}

func (s *staticCircuits) add(c *circuits.Circuit) {
	s.mu.Lock()
	s.cs = append(s.cs, c)
	s.mu.Unlock()
}

// linkTransport carries DHT RPCs over links, as a veil node does.
type linkTransport struct{ m *link.Links }

func (t linkTransport) Send(ctx context.Context, to proto.DHTContact, payload []byte) error {
	l := t.m.Lookup(to.ID)
	if l == nil {
		var err error
		if l, err = t.m.Get(ctx, to.ID, to.Addr.String()); err != nil {
			return err
		}
	}
	return l.SendVar(proto.VarCell{Command: proto.CmdDHT, Payload: payload})
}

// testNet is the network and the test's records of it.
type testNet struct {
	t     testing.TB
	ctx   context.Context
	nodes []*netNode
	dir   map[proto.NodeID]proto.NodeDescriptor
	names map[proto.NodeID]string
	wg    sync.WaitGroup

	mu    sync.Mutex
	linkS map[[2]proto.NodeID]bool // {a, b}: a link between a and b carried a cell (a's side saw it)
}

func newTestNet(t testing.TB, ctx context.Context) *testNet {
	return &testNet{t: t, ctx: ctx, dir: map[proto.NodeID]proto.NodeDescriptor{}, names: map[proto.NodeID]string{},
		linkS: map[[2]proto.NodeID]bool{}}
}

func (n *testNet) record(self, peer proto.NodeID) {
	n.mu.Lock()
	n.linkS[[2]proto.NodeID{self, peer}] = true
	n.mu.Unlock()
}

// linked reports whether a and b ever exchanged a cell over a link, or
// hold one now.
func (n *testNet) linked(a, b *netNode) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.linkS[[2]proto.NodeID{a.id.ID, b.id.ID}] || n.linkS[[2]proto.NodeID{b.id.ID, a.id.ID}] ||
		a.links.Lookup(b.id.ID) != nil || b.links.Lookup(a.id.ID) != nil
}

// circuitBuilder builds ORDB-to-ORDB circuits of hops hops (the last one
// the provider), picking middle hops from the network's relays.
type circuitBuilder struct {
	net  *testNet
	self *netNode
}

type builtCircuit struct{ c *circuits.Circuit }

func (b builtCircuit) OpenStream(ctx context.Context) (CellStream, error) {
	return b.c.OpenStream(ctx, ORDBDest)
}
func (b builtCircuit) Done() <-chan struct{} { return b.c.Done() }
func (b builtCircuit) Close() error          { return b.c.Close() }

func (b circuitBuilder) BuildTo(ctx context.Context, rec proto.ProviderRecord) (ORDBCircuit, error) {
	d, ok := b.net.dir[rec.ORDB]
	if !ok {
		return nil, fmt.Errorf("no descriptor for %v", rec.ORDB.Short())
	}
	c, err := b.self.sw.Build(ctx, []proto.NodeDescriptor{d})
	if err != nil {
		return nil, err
	}
	return builtCircuit{c}, nil
}

// addInfra starts an infrastructure node: relay, DHT, ORDB Relay.
func (n *testNet) addInfra(name string, tune func(*RelayConfig)) *netNode {
	t := n.t
	nd := n.addNode(name, proto.FlagRelay|proto.FlagORDB, true)
	ap := nd.desc.Addrs[0]
	dcfg := kademlia.DefaultNodeConfig()
	dcfg.DHT.MaxPerSubnet = 0
	dht, err := kademlia.NewNode(dcfg, kademlia.Identity{ID: nd.id.ID, Addr: ap, OnionKey: nd.id.OnionPublic(), Key: nd.id.Key}, linkTransport{nd.links})
	if err != nil {
		t.Fatal(err)
	}
	nd.dht = dht
	nd.dhtp.Store(dht)
	rcfg := DefaultRelayConfig()
	rcfg.Core.Self = nd.id.ID
	rcfg.DHT = dht
	rcfg.Builder = circuitBuilder{net: n, self: nd}
	if tune != nil {
		tune(&rcfg)
	}
	if nd.relay, err = NewRelay(rcfg); err != nil {
		t.Fatal(err)
	}
	nd.sw.Handle(ORDBDest, func(s *circuits.Stream) { nd.relay.Serve(FromCircuitStream(s)) })
	n.wg.Add(2)
	go func() { defer n.wg.Done(); _ = dht.Run(n.ctx) }()
	go func() { defer n.wg.Done(); _ = nd.relay.Run(n.ctx) }()
	return nd
}

// addPeer starts a peer: no listener, no DHT, a store and the PeerDest
// service.
func (n *testNet) addPeer(name string) *netNode {
	nd := n.addNode(name, 0, false)
	nd.store = openStore(n.t, name+".db")
	p, err := NewPeer(PeerConfig{Store: nd.store, Circuits: &nd.circs})
	if err != nil {
		n.t.Fatal(err)
	}
	nd.peer = p
	nd.sw.Handle(PeerDest, p.Serve)
	return nd
}

func (n *testNet) addNode(name string, flags uint8, listen bool) *netNode {
	t := n.t
	id, err := circuits.NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	nd := &netNode{name: name, id: id}
	lcfg := link.DefaultConfig()
	lcfg.MaxInboundPerSubnet = 0 // every node is on 127.0.0.1
	nd.links = link.NewLinks(id.Key, lcfg)
	cfg := circuits.DefaultSwitchConfig()
	cfg.Flags = flags
	cfg.AllowPrivateExtend = true // extends to 127.0.0.1
	if nd.sw, err = circuits.NewSwitch(id, nd.links, cfg); err != nil {
		t.Fatal(err)
	}
	nd.links.SetHandlers(link.Handlers{
		Cell: func(l link.Conn, c *proto.Cell) { n.record(id.ID, l.Peer()); nd.sw.HandleCell(l, c) },
		Var: func(l link.Conn, v proto.VarCell) {
			n.record(id.ID, l.Peer())
			if d := nd.dhtp.Load(); d != nil && v.Command == proto.CmdDHT {
				_ = d.Deliver(l.Peer(), v.Payload)
			}
		},
		Closed: func(l link.Conn, err error) { nd.sw.HandleClosed(l, err) },
	})
	var addrs []netip.AddrPort
	if listen {
		a, err := nd.links.Listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = []netip.AddrPort{netip.MustParseAddrPort(a.String())}
	}
	if nd.desc, err = id.Descriptor(addrs, flags, time.Hour); err != nil {
		t.Fatal(err)
	}
	n.nodes = append(n.nodes, nd)
	n.dir[id.ID] = nd.desc
	n.names[id.ID] = name
	return nd
}

// close stops every node and waits for their goroutines.
func (n *testNet) close() {
	for _, nd := range n.nodes {
		if nd.relay != nil {
			nd.relay.Close()
		}
		if nd.dht != nil {
			nd.dht.Close()
		}
	}
	for _, nd := range n.nodes {
		nd.sw.Close()
		nd.links.Close()
	}
	n.wg.Wait()
}

// joinDHT bootstraps every infrastructure node through the first.
func (n *testNet) joinDHT() {
	var infra []*netNode
	for _, nd := range n.nodes {
		if nd.dht != nil {
			infra = append(infra, nd)
		}
	}
	bridge := []proto.DHTContact{infra[0].dht.Contact()}
	for b := 1; b < len(infra); b += 8 {
		var wg sync.WaitGroup
		for _, nd := range infra[b:min(b+8, len(infra))] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := nd.dht.Bootstrap(n.ctx, bridge); err != nil {
					n.t.Errorf("bootstrap %s: %v", nd.name, err)
				}
			}()
		}
		wg.Wait()
	}
}

// build builds a circuit from `from` through path.
func (n *testNet) build(from *netNode, path ...*netNode) *circuits.Circuit {
	n.t.Helper()
	var descs []proto.NodeDescriptor
	for _, p := range path {
		descs = append(descs, p.desc)
	}
	ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
	defer cancel()
	c, err := from.sw.Build(ctx, descs)
	if err != nil {
		n.t.Fatalf("%s: building through %d hops: %v", from.name, len(path), err)
	}
	return c
}
