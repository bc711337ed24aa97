package ordb

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"veil/proto"
)

// FacilitatorKey is the DHT key under which facilitators store their
// provider records (with the F flag): an ORDB finds facilitators by
// looking it up. It is the first 20 bytes of SHA-256("veil facilitators v1").
var FacilitatorKey = func() proto.HashName {
	s := sha256.Sum256([]byte("veil facilitators v1"))
	return proto.HashName(s[:proto.IDSize])
}()

// FacilitatorBuilder builds a circuit to a facilitator node; the streams
// it opens reach the facilitator service (facilitator.ServiceDest).
type FacilitatorBuilder interface {
	BuildToFacilitator(ctx context.Context, rec proto.ProviderRecord) (ORDBCircuit, error)
}

// FinderConfig configures a FacilitatorFinder.
type FinderConfig struct {
	// Self is the node's ID: a record naming it is skipped.
	Self proto.NodeID
	// DHT finds F-flagged records under FacilitatorKey; nil: only
	// Configured ones are used.
	DHT DHT
	// Builder builds the circuits to facilitators.
	Builder FacilitatorBuilder
	// Configured facilitators are tried first, in order.
	Configured []proto.ProviderRecord
	// Refresh is how long a DHT answer is kept. 0: 5 minutes.
	Refresh time.Duration
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// FacilitatorFinder is the Facilitators of a Relay: it finds facilitators
// (configured ones, then F-flagged provider records under FacilitatorKey),
// keeps one circuit to each it used, and hands a query to the first that
// takes it. The facilitator sees the ORDB's circuit, never the requester.
// Safe for concurrent use.
type FacilitatorFinder struct {
	cfg FinderConfig

	mu      sync.Mutex // guards the fields below
	found   []proto.ProviderRecord
	foundAt time.Time
	circs   map[proto.NodeID]ORDBCircuit
	rng     *rand.Rand
}

var _ Facilitators = (*FacilitatorFinder)(nil)

// ErrNoFacilitator is returned by Ask when no facilitator took the query.
var ErrNoFacilitator = errors.New("ordb: no facilitator reachable")

// NewFacilitatorFinder makes a finder.
func NewFacilitatorFinder(cfg FinderConfig) (*FacilitatorFinder, error) {
	if cfg.Builder == nil {
		return nil, errors.New("ordb: FinderConfig.Builder is nil")
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &FacilitatorFinder{cfg: cfg, circs: make(map[proto.NodeID]ORDBCircuit),
		rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}, nil
}

// candidates are the facilitators to try: configured first, then those
// the DHT named (in random order, so that ORDBs spread over them).
func (f *FacilitatorFinder) candidates(ctx context.Context) []proto.ProviderRecord {
	f.mu.Lock()
	age := f.cfg.Now().Sub(f.foundAt)
	// An empty answer is asked again sooner: a facilitator may have
	// joined since.
	stale := f.cfg.DHT != nil && (f.foundAt.IsZero() || age > f.cfg.Refresh || (len(f.found) == 0 && age > f.cfg.Refresh/10))
	f.mu.Unlock()
	if stale {
		if res, err := f.cfg.DHT.FindValue(ctx, FacilitatorKey); err == nil {
			var recs []proto.ProviderRecord
			for _, r := range res.Records {
				if r.Facilitator && r.ORDB != f.cfg.Self {
					recs = append(recs, r)
				}
			}
			f.mu.Lock()
			f.found, f.foundAt = recs, f.cfg.Now()
			f.mu.Unlock()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]proto.ProviderRecord(nil), f.cfg.Configured...)
	found := append([]proto.ProviderRecord(nil), f.found...)
	f.rng.Shuffle(len(found), func(i, j int) { found[i], found[j] = found[j], found[i] })
	seen := make(map[proto.NodeID]bool)
	for _, r := range out {
		seen[r.ORDB] = true
	}
	for _, r := range found {
		if !seen[r.ORDB] {
			seen[r.ORDB] = true
			out = append(out, r)
		}
	}
	return out
}

// circuit returns the kept circuit to rec's node, building one if needed.
func (f *FacilitatorFinder) circuit(ctx context.Context, rec proto.ProviderRecord) (ORDBCircuit, error) {
	f.mu.Lock()
	c := f.circs[rec.ORDB]
	f.mu.Unlock()
	if c != nil {
		select {
		case <-c.Done():
			f.forget(rec.ORDB, c)
		default:
			return c, nil
		}
	}
	c, err := f.cfg.Builder.BuildToFacilitator(ctx, rec)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	if old := f.circs[rec.ORDB]; old != nil {
		f.mu.Unlock()
		c.Close() // another Ask built one meanwhile
		return old, nil
	}
	f.circs[rec.ORDB] = c
	f.mu.Unlock()
	return c, nil
}

func (f *FacilitatorFinder) forget(id proto.NodeID, c ORDBCircuit) {
	f.mu.Lock()
	if f.circs[id] == c {
		delete(f.circs, id)
	}
	f.mu.Unlock()
	c.Close()
}

// Ask sends q to the first facilitator that takes a stream and returns
// that stream, on which the answers come.
func (f *FacilitatorFinder) Ask(ctx context.Context, q proto.DBQuery) (CellStream, error) {
	cands := f.candidates(ctx)
	if len(cands) == 0 {
		return nil, fmt.Errorf("%w: none configured or found in the DHT", ErrNoFacilitator)
	}
	var lastErr error
	for _, rec := range cands {
		c, err := f.circuit(ctx, rec)
		if err != nil {
			lastErr = err
			continue
		}
		s, err := c.OpenStream(ctx)
		if err != nil {
			f.forget(rec.ORDB, c)
			lastErr = err
			continue
		}
		if err := newMsgConn(s).send(q); err != nil {
			s.Close()
			lastErr = err
			continue
		}
		return s, nil
	}
	return nil, fmt.Errorf("%w: %d tried, last: %v", ErrNoFacilitator, len(cands), lastErr)
}

// Close closes the kept circuits.
func (f *FacilitatorFinder) Close() error {
	f.mu.Lock()
	cs := f.circs
	f.circs = make(map[proto.NodeID]ORDBCircuit)
	f.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
	return nil
}
