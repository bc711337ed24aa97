package node

import (
	"bytes"
	"context"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"veil/circuits"
	"veil/kademlia"
	"veil/ordb"
	"veil/proto"
)

// ownORDBs returns the node's own ORDBs: the ORDB-flagged nodes of the
// directory closest to its ID (XOR distance), at most ordb.MinORDBs. The
// Peersm specification has a node build its circuits to nodes close to
// it acting as its ORDBs. In a network with fewer ORDBs than that, all
// of them (but the node itself) are its ORDBs; with none, the list is
// empty and the node can neither advertise nor fetch.
func (n *Node) ownORDBs() []proto.NodeDescriptor {
	self := n.id.ID
	anon := n.anonymous()
	var out []proto.NodeDescriptor
	for _, d := range n.dir.Nodes() {
		// An anonymous node's bridges know its address: never let them
		// see what it asks or publishes too.
		if anon && n.isBridge(d.ID) {
			continue
		}
		if d.Flags&proto.FlagORDB != 0 && d.ID != self && len(d.Addrs) > 0 {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b proto.NodeDescriptor) int {
		da, db := xorDist(self, a.ID), xorDist(self, b.ID)
		return bytes.Compare(da[:], db[:])
	})
	k := min(len(out), ordb.MinORDBs)
	if anon {
		// Its circuits' other hops are never its own ORDBs: in a small
		// network, keep nodes enough for them.
		if room := n.dir.Len() - (n.cfg.Load().Tunnels.Hops - 1); room < k {
			k = max(min(room, len(out)), min(1, len(out)))
		}
	}
	return out[:k]
}

func xorDist(a, b proto.NodeID) proto.NodeID {
	var d proto.NodeID
	for i := range d {
		d[i] = a[i] ^ b[i]
	}
	return d
}

// buildTo builds a circuit of the configured length ending at last.
func (n *Node) buildTo(ctx context.Context, last proto.NodeDescriptor, rng *mrand.Rand) (*circuits.Circuit, []proto.NodeID, error) {
	cfg := n.cfg.Load()
	var path []proto.NodeDescriptor
	var err error
	if cfg.Anonymous {
		// Relays that are not ORDBs first; else anything but our ORDBs.
		path, err = circuits.SelectPathTo(n.anonPathNodes(last, true), cfg.Tunnels.Hops, n.id.ID, last, cfg.AllowPrivate, n.now(), rng)
		if err != nil {
			path, err = circuits.SelectPathTo(n.anonPathNodes(last, false), cfg.Tunnels.Hops, n.id.ID, last, cfg.AllowPrivate, n.now(), rng)
		}
	} else {
		path, err = circuits.SelectPathTo(n.dir.Nodes(), cfg.Tunnels.Hops, n.id.ID, last, cfg.AllowPrivate, n.now(), rng)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("choosing a path to %s (%d nodes known): %w", last.ID.Short(), n.dir.Len(), err)
	}
	bctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	defer n.guard.firstHop(path[0].ID)()
	c, err := n.sw.Build(bctx, path)
	if err != nil {
		return nil, nil, fmt.Errorf("building a circuit to %s: %w", last.ID.Short(), err)
	}
	ids := make([]proto.NodeID, len(path))
	for i, d := range path {
		ids[i] = d.ID
	}
	if n.obs != nil {
		n.obs.Path(ids)
	}
	return c, ids, nil
}

// peerCircuits are the circuits the node's Peer advertises on: one to
// each of its own ORDBs, kept and rebuilt when lost. It is the Peer's
// ordb.CircuitSource.
type peerCircuits struct {
	n    *Node
	wake chan struct{}

	mu    sync.Mutex // guards circs, ever
	circs map[proto.NodeID]*circuits.Circuit
	ever  map[proto.NodeID]bool // every ORDB a circuit was built to
}

var _ ordb.CircuitSource = (*peerCircuits)(nil)

func newPeerCircuits(n *Node) *peerCircuits {
	return &peerCircuits{n: n, wake: make(chan struct{}, 1), circs: map[proto.NodeID]*circuits.Circuit{}, ever: map[proto.NodeID]bool{}}
}

// FindCircuits returns the live circuits.
func (pc *peerCircuits) FindCircuits() []*circuits.Circuit {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	out := make([]*circuits.Circuit, 0, len(pc.circs))
	for id, c := range pc.circs {
		select {
		case <-c.Done():
			delete(pc.circs, id)
			continue
		default:
		}
		out = append(out, c)
	}
	return out
}

// ORDBs returns the IDs of the ORDBs the live circuits end at.
func (pc *peerCircuits) ORDBs() []proto.NodeID {
	pc.FindCircuits() // forgets the dead ones
	pc.mu.Lock()
	defer pc.mu.Unlock()
	out := make([]proto.NodeID, 0, len(pc.circs))
	for id := range pc.circs {
		out = append(out, id)
	}
	slices.SortFunc(out, func(a, b proto.NodeID) int { return bytes.Compare(a[:], b[:]) })
	return out
}

// Ever returns the IDs of every ORDB a circuit was built to since the
// node started: its ORDBs change as nodes come and go.
func (pc *peerCircuits) Ever() []proto.NodeID {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	out := make([]proto.NodeID, 0, len(pc.ever))
	for id := range pc.ever {
		out = append(out, id)
	}
	slices.SortFunc(out, func(a, b proto.NodeID) int { return bytes.Compare(a[:], b[:]) })
	return out
}

// fill builds a circuit to every own ORDB that has none. It returns how
// many it built.
func (pc *peerCircuits) fill(ctx context.Context, rng *mrand.Rand) int {
	pc.FindCircuits()
	built := 0
	for _, d := range pc.n.ownORDBs() {
		pc.mu.Lock()
		_, have := pc.circs[d.ID]
		pc.mu.Unlock()
		if have {
			continue
		}
		c, _, err := pc.n.buildTo(ctx, d, rng)
		if err != nil {
			pc.n.log.Debug("peer circuit", "err", err)
			continue
		}
		pc.mu.Lock()
		if old := pc.circs[d.ID]; old != nil {
			pc.mu.Unlock()
			c.Close()
			continue
		}
		pc.circs[d.ID] = c
		pc.ever[d.ID] = true
		pc.mu.Unlock()
		built++
	}
	return built
}

func (pc *peerCircuits) closeAll() {
	pc.mu.Lock()
	cs := pc.circs
	pc.circs = map[proto.NodeID]*circuits.Circuit{}
	pc.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

// runPeer keeps the Peer's circuits to the node's own ORDBs and advertises
// on each new one everything the user published (DB_INFO at 100 %):
// the ORDBs then store provider records naming themselves. Nothing of
// what the node fetched is advertised.
func (n *Node) runPeer(ctx context.Context) {
	rng := mrand.New(mrand.NewPCG(mrand.Uint64(), mrand.Uint64()))
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.peerCircs.wake:
		}
		// An anonymous node builds circuits only when it has something
		// to advertise: a client that only fetches links to nothing else.
		if n.anonymous() {
			if names, err := n.served.Names(); err != nil || len(names) == 0 {
				t.Reset(5 * time.Second)
				continue
			}
		}
		if n.peerCircs.fill(ctx, rng) > 0 {
			n.advertiseAll(ctx)
		}
		next := 5 * time.Second
		if len(n.peerCircs.FindCircuits()) < ordb.MinORDBs {
			next = time.Second
		}
		t.Reset(next)
	}
}

// advertiseAll advertises every published content on the circuits not
// told yet (Peer.Advertise skips those told before).
func (n *Node) advertiseAll(ctx context.Context) {
	names, err := n.served.Names()
	if err != nil {
		return
	}
	told := 0
	for _, name := range names {
		if c, _ := n.peer.Advertise(ctx, name); c > 0 {
			told++
		}
	}
	// Counts only: a hash_name is never logged.
	if told > 0 {
		n.log.Info("advertised what this node serves to its ORDBs", "contents", told, "ordbs", len(n.peerCircs.FindCircuits()))
	}
}

// relayBuilder builds the circuits the node's ORDB service (ordb.Relay)
// uses to reach the ORDBs a provider record names. They are one hop:
// the two ORDBs are public, and the requester stays hidden behind its
// own circuit to the first.
type relayBuilder struct{ n *Node }

type relayCircuit struct {
	n *Node
	c *circuits.Circuit
}

func (r relayCircuit) OpenStream(ctx context.Context) (ordb.CellStream, error) {
	s, err := r.c.OpenStream(ctx, ordb.ORDBDest)
	if err != nil {
		return nil, err
	}
	return r.n.observe(s), nil
}
func (r relayCircuit) Done() <-chan struct{} { return r.c.Done() }
func (r relayCircuit) Close() error          { return r.c.Close() }

func (b relayBuilder) BuildTo(ctx context.Context, rec proto.ProviderRecord) (ordb.ORDBCircuit, error) {
	d, ok := b.n.dir.Get(rec.ORDB)
	if !ok || d.Flags&proto.FlagORDB == 0 {
		// Ask for its descriptor: discovery may not have reached it yet.
		if rec.Addr.IsValid() {
			b.n.askDescriptor(ctx, proto.DHTContact{ID: rec.ORDB, Addr: rec.Addr})
		}
		return nil, fmt.Errorf("node: no descriptor of ORDB %s", rec.ORDB.Short())
	}
	c, err := b.n.sw.Build(ctx, []proto.NodeDescriptor{d})
	if err != nil {
		return nil, err
	}
	return relayCircuit{b.n, c}, nil
}

// wakeUp has runPeer look at its circuits now.
func (pc *peerCircuits) wakeUp() {
	select {
	case pc.wake <- struct{}{}:
	default:
	}
}

// relayDHT is the DHT as the node's ORDB service sees it: it does not
// store provider records for what this node's user published, should
// the service learn of it as any ORDB would (a neighbour's DB_ANNOUNCE):
// no record names the publisher's node.
type relayDHT struct{ n *Node }

var _ ordb.DHT = relayDHT{}

func (d relayDHT) FindValue(ctx context.Context, key proto.HashName) (kademlia.Result, error) {
	return d.n.dht.FindValue(ctx, key)
}

func (d relayDHT) Provide(ctx context.Context, key proto.HashName, pieces uint8, facilitator bool) (kademlia.Result, error) {
	if _, err := d.n.served.Descriptor(key); err == nil {
		return kademlia.Result{}, nil
	}
	return d.n.dht.Provide(ctx, key, pieces, facilitator)
}
