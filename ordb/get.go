package ordb

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"veil/chunkstore"
	"veil/chunkstore/content"
	"veil/proto"
	"veil/window"
)

// GetCircuits is the set of circuits a Get downloads through: a node's
// circuit pool, or a test's. Its methods are called from several
// goroutines at once.
type GetCircuits interface {
	// OpenStream opens a stream to the ORDB service at the end of circuit
	// id.
	OpenStream(ctx context.Context, id window.CircuitID) (CellStream, error)
	// Replace destroys circuit id if it still exists and builds another to
	// an ORDB not in use, returning the new circuit's ID. It may take
	// seconds; Get does not wait for it.
	Replace(ctx context.Context, id window.CircuitID, why window.Why) (window.CircuitID, error)
}

// Clock is the time a Get runs on: the real clock by default, a fake one
// (or testing/synctest) in tests.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// GetConfig says what a Get fetches, where to, and through what.
type GetConfig struct {
	Name     proto.HashName
	Store    *chunkstore.Store // the fetch cache: chunks held are not asked again
	Circuits GetCircuits
	// Initial are the circuits to start with; the window uses
	// Window.Circuits (5) of them and keeps the rest as spares.
	Initial []window.CircuitID
	// Window tunes the scheduler; the zero value takes
	// window.DefaultConfig(Name). Its HashName is set to Name.
	Window window.Config
	Clock  Clock      // nil: the real clock
	Rand   *rand.Rand // nil: a randomly seeded one
	// Deliver, if set, receives the content in reading order: data holds
	// the chunks from chunk on (every chunk whole but a static content's
	// last). Without seeks, the calls are in order and cover the content
	// once. An error ends the Get.
	Deliver func(chunk uint64, data []byte) error
	// Progress, if set, is called as chunks arrive (at most every 100 ms
	// of the clock, and once at the end).
	Progress func(GetProgress)
}

// GetProgress is a snapshot of a Get.
type GetProgress struct {
	Held, Total uint64 // chunks
	Size        uint64 // bytes of the content (0 until the descriptor came)
	Resumed     uint64 // chunks held when the Get started
	Replaced    int    // circuits replaced so far, for any reason
	Lost        int    // of which failed or stalled (not merely slow)
	Circuits    []CircuitRate
	// Live is set for a live stream (Total is then 0); LiveStart is where
	// the reading started (the ORDB's DB_LIVE_START).
	Live      bool
	LiveStart uint64
	// Skipped counts a live stream's chunks jumped over: the reading fell
	// behind what the publisher keeps and went on from what is available.
	Skipped uint64
}

// CircuitRate is one circuit's share of a Get.
type CircuitRate struct {
	ID          window.CircuitID
	Active      bool
	BytesPerSec float64 // the window's estimate; 0 until measured
	TM          time.Duration
}

// Get is one download run by the five-circuit window: one goroutine (Run)
// owns the window; each circuit has one stream to its ORDB, on which GETs
// are pipelined (answers come in query order), a writer goroutine and a
// reader goroutine that verifies and stores every range before the window
// hears of it.
type Get struct {
	cfg   GetConfig
	w     *window.Window
	seeks chan uint64

	arrivals chan arrival
	replaced chan replacement
	circs    map[window.CircuitID]*getCirc
	dropped  []*getCirc // closed, maybe still winding down
	building int        // replacements under way
	lost     int        // circuits replaced as failed or stalled

	desc      proto.DBConnected
	known     bool
	live      bool   // a live stream: no end, total unused
	liveStart uint64 // live: where reading started
	head      uint64 // live: the head length last told the window
	skipped   uint64 // live: chunks skipped (window.Skipped)
	total     uint64
	resumed   uint64
	buf       map[uint64][]byte // chunks of this run not yet delivered (Deliver only)
	lastProg  time.Time

	// start: when Run started; end: when the window got its last chunk,
	// zero unless Run succeeded (Efficiency).
	start, end time.Time

	// trace, if set (tests), sees the window after every arrival.
	trace func(w *window.Window, a arrival)
}

// NewGet checks cfg and returns the Get; Run does the work.
func NewGet(cfg GetConfig) (*Get, error) {
	if cfg.Store == nil || cfg.Circuits == nil {
		return nil, errors.New("ordb: GetConfig needs Store and Circuits")
	}
	if cfg.Window.Circuits == 0 {
		cfg.Window = window.DefaultConfig(cfg.Name)
	}
	cfg.Window.HashName = cfg.Name
	if err := cfg.Window.Validate(); err != nil {
		return nil, err
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return &Get{
		cfg:      cfg,
		w:        window.New(cfg.Window, cfg.Rand),
		seeks:    make(chan uint64, 16),
		arrivals: make(chan arrival, 256),
		replaced: make(chan replacement, 16),
		circs:    make(map[window.CircuitID]*getCirc),
		buf:      make(map[uint64][]byte),
	}, nil
}

// Seek asks for chunk next: the window moves its read position there and
// delivers from there first. Safe to call from any goroutine while Run
// runs.
func (g *Get) Seek(chunk uint64) {
	select {
	case g.seeks <- chunk:
	default: // a burst of seeks: the ones queued already will do
	}
}

// ErrNoCircuits: every circuit failed and none could be rebuilt.
var ErrNoCircuits = errors.New("ordb: no circuit left for the download")

// Run downloads the content and returns its descriptor once every chunk is
// verified, stored (flushed to disk) and delivered. It may be called once.
func (g *Get) Run(ctx context.Context) (proto.DBConnected, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer g.closeAll(false)
	now := g.cfg.Clock.Now()
	g.start = now
	// A resumed download already has the descriptor: no need to ask it.
	if d, err := g.cfg.Store.Descriptor(g.cfg.Name); err == nil && d.Flags&proto.FlagLive == 0 {
		if err := g.takeDescriptor(d, 0, 0, now, 0, false); err != nil {
			return d, err
		}
	}
	// Seeks asked before Run come first.
	for pending := true; pending; {
		select {
		case c := <-g.seeks:
			g.w.Handle(window.Seek{Chunk: c}, now)
		default:
			pending = false
		}
	}
	for _, id := range g.cfg.Initial {
		g.addCircuit(ctx, id, now)
	}
	var timer <-chan time.Time
	var armed time.Time
	for {
		if err := g.execute(ctx); err != nil {
			return g.desc, err
		}
		if g.w.Over() {
			end := g.cfg.Clock.Now()
			if err := g.finish(ctx); err != nil {
				return g.desc, err
			}
			g.end = end
			return g.desc, nil
		}
		if len(g.circs) == 0 && g.building == 0 {
			g.w.Stop()
			_ = g.execute(ctx)
			if err := ctx.Err(); err != nil {
				// The circuits failed because the Get was cancelled
				// (their streams closed, their replacements not built).
				return g.desc, err
			}
			return g.desc, ErrNoCircuits
		}
		if dl := g.w.Deadline(); !dl.Equal(armed) {
			armed, timer = dl, nil
			if !dl.IsZero() {
				timer = g.cfg.Clock.After(max(dl.Sub(g.cfg.Clock.Now()), 0))
			}
		}
		select {
		case a := <-g.arrivals:
			if err := g.arrive(a); err != nil {
				g.w.Stop()
				_ = g.execute(ctx)
				return g.desc, err
			}
		case r := <-g.replaced:
			g.building--
			if r.err == nil && ctx.Err() == nil {
				g.addCircuit(ctx, r.id, g.cfg.Clock.Now())
			}
		case c := <-g.seeks:
			g.w.Handle(window.Seek{Chunk: c}, g.cfg.Clock.Now())
		case <-timer:
			armed, timer = time.Time{}, nil
			// Answers already here count before the timer judges a stall.
			for drained := false; !drained; {
				select {
				case a := <-g.arrivals:
					if err := g.arrive(a); err != nil {
						g.w.Stop()
						_ = g.execute(ctx)
						return g.desc, err
					}
				default:
					drained = true
				}
			}
			g.w.Tick(g.cfg.Clock.Now())
		case <-ctx.Done():
			g.w.Stop()
			_ = g.execute(ctx)
			return g.desc, ctx.Err()
		}
	}
}

// Stats returns the window's counters. Only for use after Run returned
// (the window belongs to Run's goroutine while it runs).
func (g *Get) Stats() window.Stats { return g.w.Stats() }

// Efficiency is how much of what its circuits could carry a finished Get
// got: the chunks it received / its time from Run to the last chunk / the
// sum of its circuits' measured rates at the end (window.Capacity). 0
// unless Run succeeded with a rate measured (a content already held, a
// failed Get). Only for use after Run returned.
func (g *Get) Efficiency() float64 {
	cap, d := g.w.Capacity(), g.end.Sub(g.start).Seconds()
	if g.end.IsZero() || cap <= 0 || d <= 0 {
		return 0
	}
	// The rates are estimates that lag a short transfer's: one that
	// went faster than its circuits were measured at used them fully.
	return min(float64(g.w.Stats().Received)/d/cap, 1)
}

// addCircuit starts the streams of circuit id and offers it to the window.
func (g *Get) addCircuit(ctx context.Context, id window.CircuitID, now time.Time) {
	if _, dup := g.circs[id]; dup {
		return
	}
	c := newGetCirc(ctx, g, id, nil)
	g.circs[id] = c
	g.w.AddCircuit(id, now)
}

// execute carries out the window's actions, until it has none.
func (g *Get) execute(ctx context.Context) error {
	for {
		acts := g.w.Ready()
		if len(acts) == 0 {
			return nil
		}
		if err := g.executeOnce(ctx, acts); err != nil {
			return err
		}
	}
}

func (g *Get) executeOnce(ctx context.Context, acts []window.Action) error {
	// Answers on a stream come in query order, so a cancelled GET's
	// answer would hold up every later one on its stream (a seek would
	// wait for up to a window of bytes). A data GET cancelled while the
	// download goes on (a seek) restarts its circuit's stream: the old
	// one is closed, its GETs still wanted are asked again. Other cancels
	// (a spare descriptor GET, the download's end) leave the answer to be
	// read. The restarts come first, so that this batch's new GETs (a
	// seek's) go out on the new streams, not on old ones about to be
	// closed (whose relays would forward them, and the provider serve
	// them, for nothing).
	// A circuit this batch replaces is not restarted.
	var restart []*getCirc
	if !g.w.Over() {
		var replaced []window.CircuitID
		for _, a := range acts {
			if a, ok := a.(window.ReplaceCircuit); ok {
				replaced = append(replaced, a.Circuit)
			}
		}
		for _, a := range acts {
			if a, ok := a.(window.Cancel); ok && !slices.Contains(replaced, a.Circuit) {
				if c := g.circs[a.Circuit]; c != nil && c.cancelData(a.RequestID) && !slices.Contains(restart, c) {
					restart = append(restart, c)
				}
			}
		}
	}
	for _, c := range restart {
		g.restart(ctx, c)
	}
	for _, a := range acts {
		switch a := a.(type) {
		case window.SendGet:
			c := g.circs[a.Circuit]
			if c == nil {
				continue
			}
			hi := uint64(a.Query.Chunk) + uint64(a.Query.NbChunks)
			if g.known && !g.live {
				hi = min(hi, g.total)
			}
			if g.live && !a.Query.WantsDescriptor() {
				// The head we hold: the ORDB proves its newer one
				// consistent with it (chunkstore refuses it otherwise).
				if h, err := g.cfg.Store.Head(g.cfg.Name); err == nil {
					a.Query.Known = h.Length
				}
			}
			c.fifo = append(c.fifo, sentGet{id: a.Query.RequestID, lo: uint64(a.Query.Chunk), next: uint64(a.Query.Chunk), hi: hi, desc: a.Query.WantsDescriptor()})
			if !c.send(a.Query) {
				// Its writer is wedged or gone: the circuit is no use.
				g.w.Handle(window.CircuitFailed{Circuit: c.id}, g.cfg.Clock.Now())
			}
		case window.Cancel:
			// Done above.
		case window.ReplaceCircuit:
			if c := g.circs[a.Circuit]; c != nil {
				c.close(false)
				delete(g.circs, a.Circuit)
				g.dropped = append(g.dropped, c)
			}
			g.building++
			if a.Why == window.WhyFailed || a.Why == window.WhyStalled {
				g.lost++
			}
			go func(id window.CircuitID, why window.Why) {
				nid, err := g.cfg.Circuits.Replace(ctx, id, why)
				select {
				case g.replaced <- replacement{id: nid, err: err}:
				case <-ctx.Done():
				}
			}(a.Circuit, a.Why)
		case window.Deliver:
			if err := g.deliver(ctx, a.From, a.To); err != nil {
				return err
			}
		case window.Evict:
			for i := range g.buf {
				if i < a.Below {
					delete(g.buf, i)
				}
			}
		case window.Skipped:
			g.skipped += a.To - a.From
			// Readers of the store waiting in the gap go on from a.To.
			if err := g.cfg.Store.SkipLive(g.cfg.Name, a.To); err != nil {
				return err
			}
			g.progress(true) // says so at once
		case window.Done:
		case window.Fail:
			return a.Err
		}
	}
	return nil
}

// restart replaces circuit c's stream by a new one on the same circuit
// (its spare, already open, if it has one): the GETs of the old one that
// were not cancelled end (DB_END FINISHED: nobody is blamed) and the
// window asks them again.
func (g *Get) restart(ctx context.Context, c *getCirc) {
	if g.circs[c.id] != c {
		return
	}
	spare := c.takeSpare()
	c.close(false)
	g.dropped = append(g.dropped, c)
	nc := newGetCirc(ctx, g, c.id, spare)
	g.circs[c.id] = nc
	now := g.cfg.Clock.Now()
	for _, s := range c.fifo {
		if !s.cancelled {
			g.w.Handle(window.End{Circuit: c.id, RequestID: s.id, Reason: proto.DBEndFinished}, now)
		}
	}
	c.fifo = nil
}

// finish flushes the store and ends every stream with DB_END FINISHED.
func (g *Get) finish(ctx context.Context) error {
	g.progress(true)
	if err := g.cfg.Store.Flush(ctx); err != nil {
		return err
	}
	g.closeAll(true)
	return nil
}

// closeAll closes every circuit's stream and waits for their goroutines,
// so that nothing reaches the store after Run returns.
func (g *Get) closeAll(finished bool) {
	var cs []*getCirc
	for id, c := range g.circs {
		c.close(finished)
		delete(g.circs, id)
		cs = append(cs, c)
	}
	for _, c := range g.dropped {
		c.close(false)
	}
	cs = append(cs, g.dropped...)
	g.dropped = nil
	for _, c := range cs {
		<-c.done
	}
}

// takeDescriptor stores a verified descriptor and tells the window, with
// the chunks the store already holds.
// A live stream is read from liveStart, the DB_LIVE_START its ORDB sent
// before the descriptor (without one: from the newest chunk this store
// holds, or 0); a live stream is never held whole, so it is always asked
// afresh (Run does not take a live descriptor from the store).
func (g *Get) takeDescriptor(d proto.DBConnected, c window.CircuitID, req uint64, now time.Time, liveStart uint64, hasLive bool) error {
	live := d.Flags&proto.FlagLive != 0
	if live && !g.known {
		if !hasLive {
			if h, err := g.cfg.Store.Head(g.cfg.Name); err == nil {
				liveStart = h.Length
			}
		}
		g.live, g.liveStart = true, liveStart
	}
	if !g.known {
		if _, err := g.cfg.Store.PutDescriptor(d); err != nil {
			return fmt.Errorf("storing descriptor: %w", err)
		}
	}
	have, err := g.cfg.Store.Have(g.cfg.Name)
	if err != nil {
		return err
	}
	if !g.known {
		g.known, g.desc = true, d
		if !live {
			g.total = content.ChunkCount(d.Size)
			g.resumed = countHeld(have, g.total)
		}
	}
	start := g.liveStart
	if g.live && hasLive && liveStart > start {
		// The descriptor asked again by a live fetch that fell behind:
		// where the stream stands now.
		start = liveStart
	}
	g.w.Handle(window.Descriptor{Circuit: c, RequestID: req, Size: d.Size, Have: have, Live: g.live, Start: start}, now)
	if g.live {
		g.progress(true) // where the reading starts, for the consumer
	}
	return nil
}

// arrive matches what a reader got to the GET it answers (the oldest
// unanswered one on its stream) and tells the window.
func (g *Get) arrive(a arrival) error {
	c := a.c
	if g.circs[c.id] != c {
		return nil // a dropped circuit's late news
	}
	w := g.w
	if g.trace != nil {
		defer g.trace(w, a)
	}
	switch a.kind {
	case arrFatal:
		return a.err
	case arrFailed:
		w.Handle(window.CircuitFailed{Circuit: c.id}, a.at)
	case arrDescriptor:
		if len(c.fifo) == 0 || !c.fifo[0].desc {
			w.Handle(window.CircuitFailed{Circuit: c.id}, a.at) // unasked
			return nil
		}
		s := c.fifo[0]
		c.fifo = c.fifo[1:]
		return g.takeDescriptor(a.desc, c.id, s.id, a.at, a.liveStart, a.hasLive)
	case arrEnd:
		if len(c.fifo) > 0 {
			s := c.fifo[0]
			c.fifo = c.fifo[1:]
			w.Handle(window.End{Circuit: c.id, RequestID: s.id, Reason: a.reason}, a.at)
		}
	case arrStale:
		if len(c.fifo) > 0 && !c.fifo[0].desc && c.fifo[0].next == a.lo {
			s := &c.fifo[0]
			s.next += uint64(a.n)
			if !s.resumed {
				s.resumed = true
				w.Handle(window.End{Circuit: c.id, RequestID: s.id, Reason: proto.DBEndFinished}, a.at)
			}
			if s.next >= s.hi {
				c.fifo = c.fifo[1:]
			}
		}
	case arrBad:
		var req uint64
		if len(c.fifo) > 0 {
			req = c.fifo[0].id
		}
		w.Handle(window.BadChunk{Circuit: c.id, RequestID: req, Chunk: a.lo, Count: a.n}, a.at)
	case arrRange:
		// An answer starts where the oldest GET's answer stands; one that
		// starts elsewhere answers a later GET, and the older ones were
		// cut short by the ORDB (it serves fewer chunks per query).
		for len(c.fifo) > 0 && !c.fifo[0].desc && c.fifo[0].next != a.lo {
			s := c.fifo[0]
			c.fifo = c.fifo[1:]
			w.Handle(window.End{Circuit: c.id, RequestID: s.id, Reason: proto.DBEndFinished}, a.at)
		}
		if len(c.fifo) == 0 || c.fifo[0].desc {
			// Verified chunks nobody asked on this stream: take them, but
			// the ORDB breaks the protocol.
			g.keep(a)
			w.Handle(window.Data{Circuit: c.id, Chunk: a.lo, Count: a.n}, a.at)
			w.Handle(window.CircuitFailed{Circuit: c.id}, a.at)
			return nil
		}
		s := &c.fifo[0]
		s.next += uint64(a.n)
		req := s.id
		if s.next >= s.hi {
			c.fifo = c.fifo[1:]
		}
		g.keep(a)
		w.Handle(window.Data{Circuit: c.id, RequestID: req, Chunk: a.lo, Count: a.n}, a.at)
		if g.live {
			// The head the store holds now: a read position too far
			// behind it jumps ahead (window.Skipped).
			if h, err := g.cfg.Store.Head(g.cfg.Name); err == nil && h.Length > g.head {
				g.head = h.Length
				w.Handle(window.LiveHead{Length: h.Length}, a.at)
			}
		}
		g.progress(false)
	}
	return nil
}

// keep holds the chunks of a range for Deliver, if they are in reach of
// the read position (the rest is read back from the store).
func (g *Get) keep(a arrival) {
	if g.cfg.Deliver == nil || a.data == nil {
		return
	}
	base := g.w.Stats().Base
	limit := base + uint64(g.cfg.Window.MaxWindow)
	for k := range a.n {
		i := a.lo + uint64(k)
		if i < base || i >= limit || len(g.buf) >= 2*g.cfg.Window.MaxWindow {
			continue
		}
		end := min((k+1)*proto.ChunkSize, len(a.data))
		g.buf[i] = a.data[k*proto.ChunkSize : end]
	}
}

// deliver hands chunks [from, to) to Deliver: from memory when this run
// received them, from the store otherwise.
func (g *Get) deliver(ctx context.Context, from, to uint64) error {
	if g.cfg.Deliver == nil {
		return nil
	}
	const batch = 64
	var out []byte
	for lo := from; lo < to; {
		out = out[:0]
		hi := min(lo+batch, to)
		i := lo
		for ; i < hi; i++ {
			b, ok := g.buf[i]
			if !ok {
				break
			}
			out = append(out, b...)
			delete(g.buf, i)
		}
		if i == lo {
			// Not in memory: stored earlier, or by this run beyond reach.
			// Ingest queues; a Flush makes what it queued readable.
			for ; i < hi; i++ {
				if _, ok := g.buf[i]; ok {
					break
				}
			}
			var err error
			out, _, err = g.cfg.Store.AppendChunks(out, nil, g.cfg.Name, lo, i)
			if errors.Is(err, chunkstore.ErrMissing) {
				if err = g.cfg.Store.Flush(ctx); err == nil {
					out, _, err = g.cfg.Store.AppendChunks(out, nil, g.cfg.Name, lo, i)
				}
			}
			if err != nil {
				return fmt.Errorf("reading chunks %d..%d back: %w", lo, i, err)
			}
		}
		if err := g.cfg.Deliver(lo, out); err != nil {
			return fmt.Errorf("delivering: %w", err)
		}
		lo = i
	}
	return nil
}

// progress reports, at most every 100 ms unless final.
func (g *Get) progress(final bool) {
	if g.cfg.Progress == nil {
		return
	}
	now := g.cfg.Clock.Now()
	if !final && now.Sub(g.lastProg) < 100*time.Millisecond {
		return
	}
	g.lastProg = now
	st := g.w.Stats()
	p := GetProgress{Held: min(g.resumed+st.Received, g.total), Total: g.total, Size: g.desc.Size, Resumed: g.resumed, Replaced: st.Replaced, Lost: g.lost,
		Live: g.live, LiveStart: g.liveStart, Skipped: g.skipped}
	if g.live {
		p.Held = st.Received
	}
	if final && g.w.Over() && g.known {
		p.Held = g.total
	}
	for _, ci := range g.w.Circuits() {
		p.Circuits = append(p.Circuits, CircuitRate{ID: ci.ID, Active: ci.Active, BytesPerSec: ci.Rate * proto.ChunkSize, TM: ci.TM})
	}
	g.cfg.Progress(p)
}

type replacement struct {
	id  window.CircuitID
	err error
}
