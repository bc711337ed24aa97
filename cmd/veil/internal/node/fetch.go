package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"sync"
	"time"

	"veil/chunkstore"
	"veil/chunkstore/content"
	"veil/ordb"
	"veil/proto"
	"veil/window"
)

// Fetch errors.
var (
	// ErrNotFound: the node's ORDBs found no provider of the content.
	ErrNotFound = errors.New("node: no provider found for this hash_name")
	// ErrNotORDB: publishing needs the ORDB role or anonymous = true
	// (what is published is served by the node's Peer).
	ErrNotORDB = errors.New("node: publishing needs roles.ordb = true or anonymous = true")
	// errNoORDB: the directory holds no ORDB to fetch or advertise through.
	errNoORDB = errors.New("node: no ORDB known yet")
)

// Published is the outcome of a publication.
type Published struct {
	Name proto.HashName
	Size uint64
	// Advertised counts the node's own ORDBs told (DB_INFO at 100 %)
	// through its circuits; they store the provider records, naming
	// themselves.
	Advertised int
}

// Publish stores a static content in the served store, signed by the
// configured pseudonym's key, or by a key made for this content alone
// when there is none (never the node's identity key), and advertises it
// through the node's own circuits to its ORDBs, which announce in the
// DHT that they can get it. No provider record names this node.
func (n *Node) Publish(ctx context.Context, mime string, src io.Reader) (Published, error) {
	return n.PublishAs(ctx, n.cfg.Load().Pseudonym, mime, src)
}

// PublishAs is Publish signed by pseudonym's key ("": a key for this
// content alone).
func (n *Node) PublishAs(ctx context.Context, pseudonym, mime string, src io.Reader) (Published, error) {
	if n.served == nil {
		return Published{}, ErrNotORDB
	}
	key, forget, err := n.publishKey(pseudonym)
	if err != nil {
		return Published{}, err
	}
	if forget {
		defer clear(key) // nothing will be signed with it again: static content
	}
	return n.publishSigned(ctx, key, mime, src)
}

// publishSigned publishes src signed by key, which must not be the
// node's identity key.
func (n *Node) publishSigned(ctx context.Context, key ed25519.PrivateKey, mime string, src io.Reader) (Published, error) {
	if err := n.checkPublishKey(key); err != nil {
		return Published{}, err
	}
	d, name, err := n.served.Publish(ctx, key, mime, uint64(n.now().Unix()), src)
	if err != nil {
		return Published{}, err
	}
	if err := n.served.Flush(ctx); err != nil {
		return Published{}, err
	}
	n.mu.Lock()
	n.published++
	n.mu.Unlock()
	p := Published{Name: name, Size: d.Size}
	// Right after start the circuits to the ORDBs may still be building:
	// wait a little for them (runPeer advertises on later ones anyway).
	n.peerCircs.wakeUp()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for deadline := n.now().Add(30 * time.Second); len(n.peerCircs.FindCircuits()) < len(n.ownORDBs()) && n.now().Before(deadline); {
		select {
		case <-ctx.Done():
			return p, ctx.Err()
		case <-t.C:
		}
	}
	told, err := n.peer.Advertise(ctx, name)
	p.Advertised = told
	if circs := len(n.peerCircs.FindCircuits()); told == 0 && err == nil {
		// runPeer may have told every circuit first (Advertise tells a
		// circuit once).
		if p.Advertised = circs; circs == 0 {
			err = errNoORDB
		}
	}
	if err != nil {
		return p, fmt.Errorf("advertising to the node's ORDBs (%d told): %w", told, err)
	}
	return p, nil
}

// transfer is one fetch in progress, for status.
type transfer struct {
	mu       sync.Mutex
	held     uint64
	total    uint64
	size     uint64
	resumed  uint64 // chunks held when the fetch started
	attempts int
	path     []proto.NodeID // the last circuit built, the ORDB last
	circuits int            // circuits built for the current attempt
	lost     int            // circuits of the current attempt lost and replaced
	rates    []float64      // the downloading circuits' rates, bytes per second
	started  time.Time
	err      string
	// The gateway's seeks (gateway.go): the running Get, and the last
	// chunk asked, given to each attempt's Get.
	get     *ordb.Get
	seek    uint64
	hasSeek bool
	// A live stream: where its reading started (DB_LIVE_START).
	liveStart uint64
	live      bool
}

// TransferStatus is a snapshot of a transfer.
type TransferStatus struct {
	HashName string   `json:"hash_name"`
	Held     uint64   `json:"chunks_held"`
	Total    uint64   `json:"chunks_total"`
	Size     uint64   `json:"size"`
	Resumed  uint64   `json:"chunks_resumed"`
	Attempts int      `json:"attempts"`
	Circuit  []string `json:"circuit,omitempty"`
	Circuits int      `json:"circuits,omitempty"` // built for the current attempt
	Seconds  float64  `json:"seconds"`
	Error    string   `json:"error,omitempty"`
	// Rates are the downloading circuits' rates in bytes per second, as
	// the window measures them.
	Rates []float64 `json:"circuit_rates,omitempty"`
}

func (t *transfer) status(name proto.HashName, now time.Time) TransferStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := TransferStatus{HashName: name.String(), Held: t.held, Total: t.total, Size: t.size, Resumed: t.resumed,
		Attempts: t.attempts, Circuits: t.circuits, Seconds: now.Sub(t.started).Seconds(), Error: t.err,
		Rates: append([]float64(nil), t.rates...)}
	for _, id := range t.path {
		s.Circuit = append(s.Circuit, id.String())
	}
	return s
}

// Progress is reported while fetching.
type Progress struct {
	Held, Total uint64 // chunks
	Size        uint64 // bytes of the content (0 until the descriptor came)
	Resumed     uint64 // chunks already held when the fetch started
	Attempt     int    // the attempt (1: the first); each builds its circuits afresh
	// Rates are the downloading circuits' rates in bytes per second, as
	// the window measures them (0 until measured).
	Rates []float64
	// Lost counts the circuits of this attempt that failed or stalled
	// and were replaced (the download went on through the others).
	Lost int
}

// maxAttempts bounds the attempts of one fetch; maxNotFound those that
// found no provider record at all (a record may still be on its way).
const maxAttempts, maxNotFound = 12, 3

// Fetch gets a content into the fetch cache: it builds circuits ending at
// the node's own ORDBs and pulls the chunks through them (ordb.Get),
// verifying each. The node never looks the content up in the DHT: its
// ORDBs do, find the ORDBs that provide it and relay. Nothing is
// announced about what the node fetched. A broken circuit is replaced and
// the fetch resumes from what the cache holds. progress may be nil.
func (n *Node) Fetch(ctx context.Context, name proto.HashName, progress func(Progress)) (proto.DBConnected, error) {
	if d, ok := n.complete(name); ok {
		total := content.ChunkCount(d.Size)
		if progress != nil {
			progress(Progress{Held: total, Total: total, Size: d.Size, Resumed: total})
		}
		return d, nil
	}
	t := &transfer{started: n.now()}
	n.mu.Lock()
	n.transfers[name] = t
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		if n.transfers[name] == t {
			delete(n.transfers, name)
		}
		n.mu.Unlock()
	}()
	// lost < 0: keep the count.
	report := func(held, total, size uint64, rates []float64, lost int) {
		t.mu.Lock()
		t.held, t.total = held, total
		if lost >= 0 {
			t.lost = lost
		}
		t.rates = rates
		if size > 0 {
			t.size = size
		}
		p := Progress{Held: held, Total: total, Size: t.size, Resumed: t.resumed, Attempt: t.attempts, Rates: rates, Lost: t.lost}
		t.mu.Unlock()
		if progress != nil {
			progress(p)
		}
	}
	if d, err := n.cache.Descriptor(name); err == nil {
		total := content.ChunkCount(d.Size)
		held := n.held(name, total)
		t.mu.Lock()
		t.resumed, t.size = held, d.Size
		t.mu.Unlock()
		report(held, total, d.Size, nil, 0)
	}
	rng := mrand.New(mrand.NewPCG(mrand.Uint64(), mrand.Uint64()))
	var lastErr error
	notFound := 0
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return proto.DBConnected{}, err
		}
		t.mu.Lock()
		t.attempts = attempt
		t.mu.Unlock()
		d, err := n.fetchOnce(ctx, name, rng, t, report)
		if err == nil {
			return d, nil
		}
		lastErr = err
		if errors.Is(err, ErrNotFound) {
			if notFound++; notFound == maxNotFound {
				return proto.DBConnected{}, err
			}
		}
		t.mu.Lock()
		t.err = err.Error()
		t.mu.Unlock()
		n.log.Info("fetch attempt failed", "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return proto.DBConnected{}, ctx.Err()
		case <-time.After(time.Duration(min(attempt, 5)) * 300 * time.Millisecond):
		}
	}
	return proto.DBConnected{}, lastErr
}

// complete returns the descriptor of a content the node holds whole:
// fetched before, or published here.
func (n *Node) complete(name proto.HashName) (proto.DBConnected, bool) {
	if d, ok := complete(n.cache, name); ok {
		return d, true
	}
	if n.served != nil {
		return complete(n.served, name)
	}
	return proto.DBConnected{}, false
}

// complete returns the descriptor of a static content s holds whole.
func complete(s *chunkstore.Store, name proto.HashName) (proto.DBConnected, bool) {
	d, err := s.Descriptor(name)
	if err != nil || d.Flags&proto.FlagLive != 0 {
		return d, false
	}
	total := content.ChunkCount(d.Size)
	return d, held(s, name, total) == total
}

func (n *Node) held(name proto.HashName, total uint64) uint64 { return held(n.cache, name, total) }

func held(s *chunkstore.Store, name proto.HashName, total uint64) uint64 {
	_, count, err := s.Progress(name)
	if err != nil {
		return 0
	}
	return min(count, total)
}

// fetchOnce is one attempt: six circuits to the node's own ORDBs, and the
// five-circuit window (ordb.Get) pulling the chunks through them.
func (n *Node) fetchOnce(ctx context.Context, name proto.HashName, rng *mrand.Rand, t *transfer, report func(held, total, size uint64, rates []float64, lost int)) (proto.DBConnected, error) {
	ordbs := n.ownORDBs()
	if len(ordbs) == 0 {
		return proto.DBConnected{}, fmt.Errorf("%w (%d nodes known)", errNoORDB, n.dir.Len())
	}
	gc := &getCircuits{n: n, ordbs: ordbs, used: map[proto.NodeID]int{}, rng: mrand.New(mrand.NewPCG(rng.Uint64(), rng.Uint64())),
		circs: make(map[window.CircuitID]*getCirc)}
	defer gc.closeAll()
	ids, err := gc.buildAll(ctx, fetchCircuits)
	if err != nil {
		return proto.DBConnected{}, err
	}
	t.mu.Lock()
	t.path = gc.lastPath()
	t.circuits = len(ids)
	t.mu.Unlock()
	var skipped uint64 // live chunks jumped over, as last reported
	g, err := ordb.NewGet(ordb.GetConfig{
		Name: name, Store: n.cache, Circuits: gc, Initial: ids,
		Rand: mrand.New(mrand.NewPCG(rng.Uint64(), rng.Uint64())),
		Progress: func(p ordb.GetProgress) {
			var rates []float64
			for _, c := range p.Circuits {
				if c.Active {
					rates = append(rates, c.BytesPerSec)
				}
			}
			if p.Live {
				t.setLive(p.LiveStart)
				if p.Skipped > skipped {
					n.metrics.liveSkipped.Add(p.Skipped - skipped)
					n.log.Info("live fetch fell behind what the publisher keeps; skipping ahead", "hash_name", name.String(), "chunks", p.Skipped-skipped)
					skipped = p.Skipped
				}
			}
			report(p.Held, p.Total, p.Size, rates, p.Lost)
		},
	})
	if err != nil {
		return proto.DBConnected{}, err
	}
	t.attach(g)
	defer t.attach(nil)
	d, err := g.Run(ctx)
	n.metrics.countWindow(g.Stats())
	if err != nil {
		if errors.Is(err, window.ErrUnavailable) && d.Size == 0 {
			// No ORDB could even get the descriptor: none found a provider.
			n.log.Info("no ORDB found a provider", "ordbs", len(ordbs))
			return d, ErrNotFound
		}
		return d, fmt.Errorf("fetching through %d circuits: %w", len(ids), err)
	}
	n.metrics.finishedTransfer(g.Efficiency())
	total := content.ChunkCount(d.Size)
	report(total, total, d.Size, nil, -1)
	return d, nil
}

// Open returns a reader of a content the node holds: fetched (cache) or
// published (served store).
func (n *Node) Open(ctx context.Context, name proto.HashName) (*chunkstore.Reader, error) {
	if _, ok := complete(n.cache, name); ok {
		return n.cache.NewReader(ctx, name)
	}
	if n.served != nil {
		if _, err := n.served.Descriptor(name); err == nil {
			return n.served.NewReader(ctx, name)
		}
	}
	return nil, fmt.Errorf("%w: %v", chunkstore.ErrNotFound, name)
}
