package node

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	"veil/circuits"
	"veil/ordb"
	"veil/proto"
	"veil/window"
)

// getCircuits are the circuits of one fetch: each a different 3-hop path
// ending at the provider's ORDB. (Once ORDBs relay, they will end at this
// node's own ORDBs instead.) It is the ordb.GetCircuits of the fetch.
type getCircuits struct {
	n    *Node
	last proto.NodeDescriptor

	mu    sync.Mutex // guards rng, circs, path
	rng   *mrand.Rand
	circs map[window.CircuitID]*circuits.Circuit
	path  []proto.NodeID // the last circuit built, for status
}

var _ ordb.GetCircuits = (*getCircuits)(nil)

// fetchCircuits is how many circuits a fetch builds: the window's five and
// a spare, as the Peersm specification asks.
const fetchCircuits = 6

// build makes one circuit to the provider's ORDB.
func (gc *getCircuits) build(ctx context.Context) (window.CircuitID, error) {
	cfg := gc.n.cfg.Load()
	gc.mu.Lock()
	path, err := circuits.SelectPathTo(gc.n.dir.Nodes(), cfg.Tunnels.Hops, gc.n.id.ID, gc.last, cfg.AllowPrivate, gc.n.now(), gc.rng)
	gc.mu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("choosing a path (%d nodes known): %w", gc.n.dir.Len(), err)
	}
	bctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	c, err := gc.n.sw.Build(bctx, path)
	cancel()
	if err != nil {
		return 0, fmt.Errorf("building a circuit: %w", err)
	}
	ids := make([]proto.NodeID, len(path))
	for i, d := range path {
		ids[i] = d.ID
	}
	id := window.CircuitID(c.ID())
	gc.mu.Lock()
	gc.circs[id], gc.path = c, ids
	gc.mu.Unlock()
	return id, nil
}

// buildAll builds up to count circuits at once and returns those built,
// or the last error if none was.
func (gc *getCircuits) buildAll(ctx context.Context, count int) ([]window.CircuitID, error) {
	type res struct {
		id  window.CircuitID
		err error
	}
	out := make(chan res, count)
	for range count {
		go func() {
			id, err := gc.build(ctx)
			out <- res{id, err}
		}()
	}
	var ids []window.CircuitID
	var err error
	for range count {
		r := <-out
		if r.err != nil {
			err = r.err
			continue
		}
		ids = append(ids, r.id)
	}
	if len(ids) == 0 {
		return nil, err
	}
	return ids, nil
}

func (gc *getCircuits) OpenStream(ctx context.Context, id window.CircuitID) (ordb.CellStream, error) {
	gc.mu.Lock()
	c := gc.circs[id]
	gc.mu.Unlock()
	if c == nil {
		return nil, fmt.Errorf("node: no circuit %d", id)
	}
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	s, err := c.OpenStream(sctx, ORDBDest)
	if err != nil {
		return nil, fmt.Errorf("opening the ORDB stream: %w", err)
	}
	return s, nil
}

// Replace destroys circuit id and builds another, trying a few paths.
func (gc *getCircuits) Replace(ctx context.Context, id window.CircuitID, why window.Why) (window.CircuitID, error) {
	gc.mu.Lock()
	c := gc.circs[id]
	delete(gc.circs, id)
	gc.mu.Unlock()
	if c != nil {
		c.Close()
	}
	gc.n.log.Debug("replacing a fetch circuit", "why", why)
	var err error
	for range 3 {
		var nid window.CircuitID
		if nid, err = gc.build(ctx); err == nil {
			return nid, nil
		}
	}
	return 0, err
}

func (gc *getCircuits) closeAll() {
	gc.mu.Lock()
	defer gc.mu.Unlock()
	for id, c := range gc.circs {
		c.Close()
		delete(gc.circs, id)
	}
}

func (gc *getCircuits) lastPath() []proto.NodeID {
	gc.mu.Lock()
	defer gc.mu.Unlock()
	return gc.path
}
