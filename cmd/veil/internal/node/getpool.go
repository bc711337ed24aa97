package node

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	"veil/circuits"
	"veil/cmd/veil/internal/control"
	"veil/ordb"
	"veil/proto"
	"veil/window"
)

// getCircuits are the circuits of one fetch: each a different 3-hop path
// ending at one of the node's own ORDBs (never at a provider: the ORDBs
// find the providers and relay), spread over them. It is the
// ordb.GetCircuits of the fetch.
type getCircuits struct {
	n     *Node
	ordbs []proto.NodeDescriptor // the node's own ORDBs

	mu    sync.Mutex // guards rng, used, circs, path
	rng   *mrand.Rand
	used  map[proto.NodeID]int // circuits open per ORDB
	circs map[window.CircuitID]*getCirc
	path  []proto.NodeID // the last circuit built, for status
}

type getCirc struct {
	c    *circuits.Circuit
	ordb proto.NodeID
}

var _ ordb.GetCircuits = (*getCircuits)(nil)

// fetchCircuits is how many circuits a fetch builds: the window's five and
// a spare, as the Peersm specification asks.
const fetchCircuits = 6

// build makes one circuit to the own ORDB with the fewest circuits of
// this fetch (the Peersm specification's requester spreads its window
// over its ORDBs).
func (gc *getCircuits) build(ctx context.Context) (window.CircuitID, error) {
	gc.mu.Lock()
	order := gc.rng.Perm(len(gc.ordbs))
	best := order[0]
	for _, i := range order {
		if gc.used[gc.ordbs[i].ID] < gc.used[gc.ordbs[best].ID] {
			best = i
		}
	}
	last := gc.ordbs[best]
	gc.used[last.ID]++
	rng := mrand.New(mrand.NewPCG(gc.rng.Uint64(), gc.rng.Uint64()))
	gc.mu.Unlock()
	c, ids, err := gc.n.buildTo(ctx, last, rng)
	if err != nil {
		gc.mu.Lock()
		gc.used[last.ID]--
		gc.mu.Unlock()
		return 0, err
	}
	id := window.CircuitID(c.ID())
	gc.mu.Lock()
	gc.circs[id], gc.path = &getCirc{c: c, ordb: last.ID}, ids
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
	st := control.Stream{ID: streamIDs.Add(1), Status: control.StreamNew, Circuit: c.c.ID(), Target: ORDBDest + ".veil:0"}
	gc.n.streamEvent(st)
	s, err := c.c.OpenStream(sctx, ORDBDest)
	if err != nil {
		st.Status, st.Reason = control.StreamFailed, "MISC"
		gc.n.streamEvent(st)
		return nil, fmt.Errorf("opening the ORDB stream: %w", err)
	}
	st.Status = control.StreamSucceeded
	gc.n.streamEvent(st)
	cs := gc.n.observe(s)
	if l := gc.n.fetchLimit; l != nil {
		cs = limitedStream{cs, l}
	}
	return &reportedStream{CellStream: cs, n: gc.n, st: st}, nil
}

// reportedStream tells the control port when a fetch stream closes.
type reportedStream struct {
	ordb.CellStream
	n    *Node
	st   control.Stream
	once sync.Once
}

func (r *reportedStream) Close() error {
	r.once.Do(func() {
		r.st.Status, r.st.Reason = control.StreamClosed, "DONE"
		r.n.streamEvent(r.st)
	})
	return r.CellStream.Close()
}

// Replace destroys circuit id and builds another, trying a few paths.
func (gc *getCircuits) Replace(ctx context.Context, id window.CircuitID, why window.Why) (window.CircuitID, error) {
	gc.mu.Lock()
	c := gc.circs[id]
	delete(gc.circs, id)
	if c != nil {
		gc.used[c.ordb]--
	}
	gc.mu.Unlock()
	if c != nil {
		c.c.Close()
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
		c.c.Close()
		delete(gc.circs, id)
	}
}

func (gc *getCircuits) lastPath() []proto.NodeID {
	gc.mu.Lock()
	defer gc.mu.Unlock()
	return gc.path
}
