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
//   - every dial goes through the guard below. The DHT's and the
//     descriptor exchange's dials reach only the bridges: a DHT refresh
//     or a descriptor request to a node found in the DHT is refused. The
//     circuit switch's dials reach the bridges and the first hops of the
//     node's own circuits: the node carries no one else's circuits
//     (max_joined_circuits = 0), so the switch dials only to build its
//     own, and the guard checks that the node dialled is a relay of the
//     directory (a first hop is one) or the first hop of a circuit being
//     built here. Every refusal is counted and logged;
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
	on bool

	mu      sync.Mutex // guards bridges, hops, logged
	bridges map[proto.NodeID]bool
	hops    map[proto.NodeID]int  // first hops of circuits being built
	logged  map[proto.NodeID]bool // refusals logged once per node

	refused atomic.Int64
}

func newDialGuard(on bool, bridges []proto.NodeID) *dialGuard {
	g := &dialGuard{on: on, hops: map[proto.NodeID]int{}, logged: map[proto.NodeID]bool{}}
	g.setBridges(bridges)
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
	if !g.on {
		return true, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.bridges[id] || g.hops[id] > 0 {
		return true, false
	}
	g.refused.Add(1)
	log = !g.logged[id]
	g.logged[id] = true
	return false, log
}

// isBridge reports whether id is one of the configured bridges.
func (g *dialGuard) isBridge(id proto.NodeID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.bridges[id]
}

// setBridges replaces the bridges (a reload).
func (g *dialGuard) setBridges(ids []proto.NodeID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.bridges = map[proto.NodeID]bool{}
	for _, b := range ids {
		g.bridges[b] = true
	}
}

// errGuard is the error of a refused dial.
type errGuard struct{ id proto.NodeID }

func (e errGuard) Error() string {
	return fmt.Sprintf("node: anonymous = true: no link to %s, which is neither a bridge nor the first hop of a circuit of ours", e.id.Short())
}

// checkDial applies the guard to a dial of id at addr.
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
	if d.links.Lookup(id) == nil && !d.n.isRelay(id) {
		if err := d.n.checkDial(id, addr); err != nil {
			return nil, err
		}
	}
	return d.links.Dial(ctx, id, addr)
}

// isRelay reports whether the directory holds id as a relay: a node the
// switch may dial as the first hop of one of our circuits (exit circuits
// for SOCKS included).
func (n *Node) isRelay(id proto.NodeID) bool {
	d, ok := n.dir.Get(id)
	return ok && d.Flags&proto.FlagRelay != 0
}

// anonymous reports whether the node runs with anonymous = true.
func (n *Node) anonymous() bool {
	c := n.cfg.Load()
	return c != nil && c.Anonymous
}

// isBridge reports whether id is one of the configured bridges.
func (n *Node) isBridge(id proto.NodeID) bool { return n.guard != nil && n.guard.isBridge(id) }

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
