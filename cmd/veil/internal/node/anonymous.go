package node

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"veil/circuits/link"
	"veil/proto"
)

// What anonymous = true does at run time (config.checkAnonymous refuses
// the settings that would reveal the user before the node starts):
//
//   - every dial goes through the guard below, which lets through only
//     the bridges and the first hop of a circuit the node is building
//     itself; any other dial (a DHT refresh, a descriptor request to a
//     node found in the DHT, an EXTEND2 someone sent over one of our
//     links) is refused and logged;
//   - the node carries no one else's circuits (max_joined_circuits = 0);
//   - it learns the directory from its bridges, through a one-hop
//     circuit to each (dirfetch.go), instead of asking each node;
//   - it builds no circuits ahead (the pool stays empty): only those of
//     its fetches and publications;
//   - its own ORDBs are never its bridges, and the first and middle hops
//     of its circuits are never ORDBs when relays that are not ORDBs are
//     known (anonPathNodes): a node that sees the user's address on a
//     link must not be one that sees what is asked or published.

// dialGuard is the anonymous node's dial policy. Safe for concurrent use.
type dialGuard struct {
	on      bool
	bridges map[proto.NodeID]bool

	mu     sync.Mutex            // guards hops, logged
	hops   map[proto.NodeID]int  // first hops of circuits being built
	logged map[proto.NodeID]bool // refusals logged once per node

	refused atomic.Int64
}

func newDialGuard(on bool, bridges []proto.NodeID) *dialGuard {
	g := &dialGuard{on: on, bridges: map[proto.NodeID]bool{}, hops: map[proto.NodeID]int{}, logged: map[proto.NodeID]bool{}}
	for _, b := range bridges {
		g.bridges[b] = true
	}
	return g
}

// firstHop lets dials to id through until the returned func is called:
// the node is building a circuit whose first hop is id.
func (g *dialGuard) firstHop(id proto.NodeID) (done func()) {
	g.mu.Lock()
	g.hops[id]++
	g.mu.Unlock()
	return func() {
		g.mu.Lock()
		if g.hops[id]--; g.hops[id] <= 0 {
			delete(g.hops, id)
		}
		g.mu.Unlock()
	}
}

// allow reports whether the node may dial id; a refusal is counted and
// its first one per node logged by the caller (it returns log = true).
func (g *dialGuard) allow(id proto.NodeID) (ok, log bool) {
	if !g.on || g.bridges[id] {
		return true, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.hops[id] > 0 {
		return true, false
	}
	g.refused.Add(1)
	log = !g.logged[id]
	g.logged[id] = true
	return false, log
}

// errGuard is the error of a refused dial.
type errGuard struct{ id proto.NodeID }

func (e errGuard) Error() string {
	return fmt.Sprintf("node: anonymous = true: no link to %s, which is neither a bridge nor the first hop of a circuit of ours", e.id.Short())
}

// check applies the guard to a dial of id at addr.
func (n *Node) checkDial(id proto.NodeID, addr string) error {
	ok, log := n.guard.allow(id)
	if ok {
		return nil
	}
	if log {
		// An address and an ID, never a hash_name.
		n.log.Info("anonymous: dial refused", "peer", id.Short(), "addr", addr)
	}
	return errGuard{id}
}

// guardedDialer is the switch's link.Dialer: the links, behind the guard.
type guardedDialer struct {
	n     *Node
	links *link.Links
}

func (d guardedDialer) Dial(ctx context.Context, id proto.NodeID, addr string) (link.Conn, error) {
	if d.links.Lookup(id) == nil {
		if err := d.n.checkDial(id, addr); err != nil {
			return nil, err
		}
	}
	return d.links.Dial(ctx, id, addr)
}

// anonymous reports whether the node runs with anonymous = true.
func (n *Node) anonymous() bool {
	c := n.cfg.Load()
	return c != nil && c.Anonymous
}

// isBridge reports whether id is one of the configured bridges.
func (n *Node) isBridge(id proto.NodeID) bool { return n.guard != nil && n.guard.bridges[id] }

// anonPathNodes returns the nodes an anonymous node's circuit to last
// may pass through before last: relays that are not ORDBs (an ORDB sees
// the hash_names others ask; were it also our first hop it would see our
// address beside them). When those are too few for a path, the fallback
// is every node but our own ORDBs (which see what we ask: they must not
// see our address too).
func (n *Node) anonPathNodes(last proto.NodeDescriptor, strict bool) []proto.NodeDescriptor {
	own := map[proto.NodeID]bool{}
	for _, d := range n.ownORDBs() {
		own[d.ID] = true
	}
	var out []proto.NodeDescriptor
	for _, d := range n.dir.Nodes() {
		switch {
		case d.ID == last.ID:
			out = append(out, d)
		case own[d.ID]:
		case strict && d.Flags&proto.FlagORDB != 0:
		default:
			out = append(out, d)
		}
	}
	return out
}

// GuardRefused counts the dials the anonymous guard refused.
func (n *Node) GuardRefused() int64 { return n.guard.refused.Load() }

// bridgeIDs returns the configured bridges' IDs.
func bridgeIDs(bs []proto.DHTContact) []proto.NodeID {
	out := make([]proto.NodeID, 0, len(bs))
	for _, b := range bs {
		out = append(out, b.ID)
	}
	return slices.Clip(out)
}
