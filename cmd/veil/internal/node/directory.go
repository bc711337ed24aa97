package node

import (
	"sync"
	"time"

	"veil/circuits"
	"veil/proto"
)

// directory is what the node knows of other nodes: the signed descriptors
// they gave over authenticated links (see descx.go). Path selection draws
// from it. Safe for concurrent use.
type directory struct {
	now func() time.Time

	mu    sync.Mutex // guards nodes, asked and down
	nodes map[proto.NodeID]proto.NodeDescriptor
	asked map[proto.NodeID]time.Time // descriptor requests sent, to ask each peer once in a while
	// down holds the nodes whose link the peer's side closed or broke
	// (likely gone: stopped, crashed, restarted elsewhere), with the time.
	// Paths avoid them for downFor, or until they speak to us again.
	down map[proto.NodeID]time.Time
	// first holds when each node held was first added: path selection
	// weights new identities low (circuits.NodeAges).
	first map[proto.NodeID]time.Time
}

// downFor is how long a node whose link died stays out of paths.
const downFor = 5 * time.Minute

var (
	_ circuits.Directory = (*directory)(nil)
	_ circuits.NodeAges  = (*directory)(nil)
)

// FirstSeen is when the node's descriptor was first added (since it was
// last dropped).
func (d *directory) FirstSeen(id proto.NodeID) (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, ok := d.first[id]
	return t, ok
}

func newDirectory(now func() time.Time) *directory {
	return &directory{now: now, nodes: map[proto.NodeID]proto.NodeDescriptor{}, asked: map[proto.NodeID]time.Time{}, down: map[proto.NodeID]time.Time{}, first: map[proto.NodeID]time.Time{}}
}

// Nodes returns the descriptors valid now, but for nodes seen going down.
func (d *directory) Nodes() []proto.NodeDescriptor {
	t := d.now()
	now := uint64(t.Unix())
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]proto.NodeDescriptor, 0, len(d.nodes))
	for id, desc := range d.nodes {
		if at, ok := d.down[id]; ok {
			if t.Sub(at) < downFor {
				continue
			}
			delete(d.down, id)
		}
		// Add took only verified descriptors: only time can void them.
		if now < desc.ValidAfter || now >= desc.ValidUntil {
			delete(d.nodes, id)
			delete(d.first, id)
			continue
		}
		out = append(out, desc)
	}
	return out
}

// Len is the number of descriptors held.
func (d *directory) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.nodes)
}

// Get returns id's descriptor if it is known and valid.
func (d *directory) Get(id proto.NodeID) (proto.NodeDescriptor, bool) {
	d.mu.Lock()
	desc, ok := d.nodes[id]
	d.mu.Unlock()
	if !ok || desc.Verify(d.now()) != nil {
		return proto.NodeDescriptor{}, false
	}
	return desc, true
}

// maxDirectory bounds the descriptors held: each costs a peer only a key
// pair, so a flood of identities must not grow the map without end.
const maxDirectory = 1 << 14

// Add keeps desc, which the caller verified, unless a newer one is held.
// A full directory first drops what expired, then refuses newcomers.
func (d *directory) Add(desc proto.NodeDescriptor) {
	d.mu.Lock()
	defer d.mu.Unlock()
	old, ok := d.nodes[desc.ID]
	if ok && old.ValidAfter > desc.ValidAfter {
		return
	}
	if !ok && len(d.nodes) >= maxDirectory {
		now := uint64(d.now().Unix())
		for id, x := range d.nodes {
			if now >= x.ValidUntil {
				delete(d.nodes, id)
				delete(d.first, id)
			}
		}
		if len(d.nodes) >= maxDirectory {
			return
		}
	}
	d.nodes[desc.ID] = desc
	if !ok {
		d.first[desc.ID] = d.now()
	}
}

// Down notes that id's link died.
func (d *directory) Down(id proto.NodeID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.nodes[id]; ok {
		d.down[id] = d.now()
	}
}

// Up notes that id spoke to us: it is back in paths.
func (d *directory) Up(id proto.NodeID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.down) > 0 {
		delete(d.down, id)
	}
}

// shouldAsk reports whether to request id's descriptor now: it is not
// held (or expires within refreshBefore) and was not asked within askEvery.
func (d *directory) shouldAsk(id proto.NodeID) bool {
	const askEvery, refreshBefore = 30 * time.Second, time.Hour
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if desc, ok := d.nodes[id]; ok && time.Unix(int64(desc.ValidUntil), 0).Sub(now) > refreshBefore {
		return false
	}
	if t, ok := d.asked[id]; ok && now.Sub(t) < askEvery {
		return false
	}
	if len(d.asked) > 4096 {
		clear(d.asked) // bounded: forgetting only means asking again
	}
	d.asked[id] = now
	return true
}
