package window

import (
	"math/rand/v2"
	"slices"
	"time"

	"veil/proto"
)

// Window is the download scheduler of one content. It is a pure state
// machine: AddCircuit, Handle and Tick take the time as an input, Ready
// returns what to do. It is not safe for concurrent use.
type Window struct {
	cfg Config
	rng *rand.Rand

	circs  []*circuit // spares and active, in AddCircuit order
	added  uint64
	gets   map[uint64]*get
	byRate []*circuit // scratch

	known    bool   // descriptor received
	live     bool   // a live stream
	end      uint64 // chunks in the content; MaxChunks for a live stream
	held     bitset // chunks the shell holds
	inflight bitset // chunks asked and not yet arrived, each on one GET
	nheld    uint64 // static content: chunks held
	// delivered marks a static content's chunks handed to Deliver, so a
	// chunk is delivered once even when seeks make the read position
	// pass it twice.
	delivered bitset

	base uint64 // read position: the next chunk to deliver
	scan uint64 // no free chunk in [base, scan)
	top  uint64 // 1 + highest chunk asked or taken since the last seek
	win  int    // the window now, in chunks

	pendingSeek    uint64
	hasPendingSeek bool

	liveHold   uint64 // live: do not ask at or beyond this until liveRetry
	holding    bool
	liveRetry  time.Time
	evicted    uint64
	failStreak int
	// liveHead: the length of the newest live head the shell holds;
	// unavailAtBase counts the GETs of published chunks at the read
	// position answered DB_END UNAVAILABLE since it last moved.
	liveHead      uint64
	unavailAtBase int
	unavailSince  time.Time // the first of them
	// lastData is when the latest chunks came, on any circuit; resumed,
	// when chunks came after every circuit had been silent for quiet():
	// the requester's own side stopped (its process starved, its store
	// busy), and every circuit's stall clock starts again from there.
	lastData, resumed time.Time
	over              bool // Done, Fail or Stop
	actions           []Action
	stats             Stats
}

// Stats are counters for tests, benchmarks and a status page.
type Stats struct {
	Base      uint64 // the read position
	Span      uint64 // chunks from Base to the highest asked or taken since the last seek
	InFlight  int    // chunks asked and not yet arrived
	Window    int    // the window now, in chunks
	Active    int    // circuits downloading
	Sent      int    // GETs sent
	Asked     uint64 // chunks asked
	Received  uint64 // chunks taken
	Dups      uint64 // chunks that arrived when already held
	Ignored   uint64 // chunks refused (outside the window or the content)
	Delivered uint64 // chunks handed to Deliver
	Replaced  int    // ReplaceCircuit actions
	Skipped   uint64 // live: chunks jumped over (Skipped actions)
}

// New returns the window for cfg.HashName. It sends nothing until it has
// circuits (AddCircuit). rng draws request IDs, counters and the circuits
// to use; the same rng seed and inputs give the same actions. cfg must be
// valid (Config.Validate); New panics otherwise, a programmer's error.
func New(cfg Config, rng *rand.Rand) *Window {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	w := &Window{cfg: cfg, rng: rng, gets: make(map[uint64]*get), win: cfg.MinWindow}
	return w
}

// Ready returns the actions since the last call, in order. The caller owns
// the slice.
func (w *Window) Ready() []Action {
	a := w.actions
	w.actions = nil
	return a
}

// Stats returns the counters.
func (w *Window) Stats() Stats {
	s := w.stats
	s.Base, s.Window = w.base, w.win
	if w.top > w.base {
		s.Span = w.top - w.base
	}
	for _, c := range w.circs {
		s.InFlight += c.outstanding
		if c.state == active {
			s.Active++
		}
	}
	return s
}

// Over reports whether the window has finished (Done, Fail or Stop).
func (w *Window) Over() bool { return w.over }

// AddCircuit offers a circuit. The window uses Config.Circuits of those it
// has, picked at random; the others wait as spares and replace the ones
// that fail or are slow. Adding a known ID does nothing.
func (w *Window) AddCircuit(id CircuitID, now time.Time) {
	if w.circuit(id) != nil || w.over {
		return
	}
	w.added++
	w.circs = append(w.circs, &circuit{id: id, added: w.added})
	w.refill(now)
}

func (w *Window) circuit(id CircuitID) *circuit {
	for _, c := range w.circs {
		if c.id == id {
			return c
		}
	}
	return nil
}

// Handle takes one event.
func (w *Window) Handle(ev Event, now time.Time) {
	if w.over {
		return
	}
	switch ev := ev.(type) {
	case Descriptor:
		w.descriptor(ev, now)
	case Data:
		w.data(ev, now)
	case End:
		w.endGet(ev, now)
	case CircuitFailed:
		if c := w.circuit(ev.Circuit); c != nil {
			w.replace(c, WhyFailed)
		}
	case BadChunk:
		if c := w.circuit(ev.Circuit); c != nil {
			w.replace(c, WhyBadData)
		} else if g := w.gets[ev.RequestID]; g != nil && g.c.id == ev.Circuit {
			w.abandon(g)
		}
	case Seek:
		w.seek(ev.Chunk, now)
	case LiveHead:
		w.liveHeadIs(ev.Length, now)
	}
	w.refill(now)
}

// Tick checks the timers: stalled circuits, a live stream's retry. Call it
// at Deadline, or periodically.
func (w *Window) Tick(now time.Time) {
	if w.over {
		return
	}
	for i := 0; i < len(w.circs) && !w.over; i++ {
		c := w.circs[i]
		if c.state == active && c.outstanding > 0 && !now.Before(w.stallDue(c)) {
			w.replace(c, WhyStalled)
			i--
		}
	}
	if w.holding && !now.Before(w.liveRetry) {
		w.holding = false
	}
	w.refill(now)
}

// Deadline returns when Tick must next run (zero if no timer is set).
func (w *Window) Deadline() time.Time {
	var t time.Time
	earliest := func(d time.Time) {
		if t.IsZero() || d.Before(t) {
			t = d
		}
	}
	if w.over {
		return t
	}
	for _, c := range w.circs {
		if c.state == active && c.outstanding > 0 {
			earliest(w.stallDue(c))
		}
	}
	if w.holding {
		earliest(w.liveRetry)
	}
	return t
}

// stallAt is when circuit c, which has GETs outstanding, counts as
// stalled: StallFactor x (tm + one GET's transfer) after its last data,
// its oldest GET or the end of the last silence of every circuit,
// whichever is latest.
func (w *Window) stallAt(c *circuit) time.Time {
	from := c.lastArrival
	if len(c.gets) > 0 && c.gets[0].sent.After(from) {
		from = c.gets[0].sent
	}
	if w.resumed.After(from) {
		from = w.resumed
	}
	return from.Add(w.stallTimeout(c))
}

// stallTimeout is how long circuit c may bring nothing while it has GETs
// outstanding: StallFactor x (tm + one GET's transfer), at least
// StallMin; FirstDataTimeout before its first answer.
func (w *Window) stallTimeout(c *circuit) time.Duration {
	tm := c.tm()
	if tm == 0 {
		return w.cfg.FirstDataTimeout
	}
	d := float64(tm)
	if r := c.rate(); r > 0 {
		d += float64(w.cfg.ChunksPerGet) / r * float64(time.Second)
	}
	return max(time.Duration(d*w.cfg.StallFactor), w.cfg.StallMin)
}

// stallDue is when circuit c is replaced as stalled: at stallAt, unless
// the other circuits awaiting answers have all been silent for quiet()
// by then. A circuit is judged against the others: when none brings
// anything, the fault is more likely the requester's own (its process
// starved, its store or uplink stuck) than every path's at once, and
// replacing them all would only lose their pipelines. That benefit of
// the doubt lasts 10 x StallMin past the others' last data (a shared
// first hop may be stuck).
func (w *Window) stallDue(c *circuit) time.Time {
	at := w.stallAt(c)
	var others time.Time
	waiting := false
	for _, o := range w.circs {
		if o != c && o.state == active && o.outstanding > 0 {
			waiting = true
			if o.lastArrival.After(others) {
				others = o.lastArrival
			}
		}
	}
	if !waiting || at.Sub(others) < w.quiet() {
		return at
	}
	if end := others.Add(10 * w.cfg.StallMin); end.After(at) {
		return end
	}
	return at
}

// quiet is how long every circuit must be silent for the silence to be
// taken as the requester's own: half of StallMin.
func (w *Window) quiet() time.Duration { return w.cfg.StallMin / 2 }

// Stop cancels every outstanding GET and ends the window with Fail
// (ErrStopped).
func (w *Window) Stop() {
	if !w.over {
		w.fail(ErrStopped)
	}
}

func (w *Window) fail(err error) {
	w.cancelAll()
	w.over = true
	w.actions = append(w.actions, Fail{Err: err})
}

func (w *Window) cancelAll() {
	for _, c := range w.circs {
		for _, g := range slices.Clone(c.gets) {
			w.actions = append(w.actions, Cancel{Circuit: c.id, RequestID: g.id})
			w.abandon(g)
		}
	}
}

func (w *Window) descriptor(ev Descriptor, now time.Time) {
	g := w.gets[ev.RequestID]
	if g != nil && g.c.id == ev.Circuit && g.desc {
		g.c.noteTM(now.Sub(g.sent), now)
		g.c.lastArrival = now
		g.c.failures = 0
		w.finish(g)
	}
	if w.known {
		if w.live && ev.Live && ev.Start > w.base {
			// A descriptor asked again (rejoin): the stream stands
			// past the read position.
			w.skipLive(min(ev.Start, MaxChunks-1), now)
		}
		return
	}
	w.known = true
	// A descriptor GET still outstanding (this answer came on another
	// one, or unasked) is of no use now.
	for _, c := range w.circs {
		for _, o := range slices.Clone(c.gets) {
			if o.desc {
				w.actions = append(w.actions, Cancel{Circuit: c.id, RequestID: o.id})
				w.abandon(o)
			}
		}
	}
	w.live = ev.Live
	if ev.Live {
		w.end = MaxChunks
		w.base = min(ev.Start, MaxChunks-1)
		w.evicted = w.base
		w.held.off, w.inflight.off = w.base/64, w.base/64
	} else {
		w.end = (ev.Size + ChunkSize - 1) / ChunkSize
		if w.end > MaxChunks {
			w.fail(ErrTooLarge)
			return
		}
	}
	for wi, word := range ev.Have {
		for word != 0 && uint64(wi)*64 < w.end {
			b := uint64(63 - leadingZeros(word))
			word &^= 1 << b
			if i := uint64(wi)*64 + b; i < w.end && i >= w.evicted && w.held.set(i) {
				w.nheld++
			}
		}
	}
	if w.hasPendingSeek {
		w.hasPendingSeek = false
		w.seek(w.pendingSeek, now)
	}
	w.scan, w.top = w.base, w.base
	w.advance()
}

func (w *Window) data(ev Data, now time.Time) {
	if ev.Count <= 0 || !w.known {
		return
	}
	g := w.gets[ev.RequestID]
	if g != nil && (g.c.id != ev.Circuit || g.desc) {
		g = nil
	}
	// No DB_DATA carries more; a larger Count is a shell's bug, and must
	// not make this loop run for ever.
	n := uint64(min(ev.Count, proto.MaxDBDataChunks))
	if ev.Chunk >= w.end {
		w.stats.Ignored += n
		return
	}
	n = min(n, w.end-ev.Chunk)
	progress := false
	for i := ev.Chunk; i < ev.Chunk+n; i++ {
		mine := g != nil && i >= g.lo && i < g.hi && g.got&(1<<(i-g.lo)) == 0
		if mine {
			g.got |= 1 << (i - g.lo)
			g.left--
			g.c.outstanding--
		}
		if w.held.get(i) {
			w.stats.Dups++
			continue
		}
		// Verified chunks we did not ask for (a cancelled GET's late
		// answer, a generous ORDB) are the shell's already: a static
		// content's are kept; a live stream's only inside the window, so
		// that its bitmaps stay bounded.
		inWindow := i >= w.base && i < w.base+uint64(w.cfg.MaxWindow)
		if !mine && !w.inflight.get(i) && w.live && !inWindow {
			w.stats.Ignored++
			continue
		}
		w.inflight.clear(i)
		w.held.set(i)
		w.nheld++
		w.stats.Received++
		if inWindow {
			w.top = max(w.top, i+1)
		}
		progress = true
	}
	if g != nil || progress {
		if !w.lastData.IsZero() && now.Sub(w.lastData) >= w.quiet() {
			w.resumed = now
		}
		w.lastData = now
	}
	if progress {
		w.failStreak = 0
		if w.holding && ev.Chunk+n > w.liveHold {
			w.holding = false
		}
	}
	if g != nil {
		// After the chunks: measuring may replace a slow circuit, and
		// with it forget g.
		w.measure(g, ev.Count, now)
		if g.left == 0 {
			w.finish(g)
		}
	}
	w.advance()
}

// measure updates g's circuit's tm and rate with count chunks arriving now.
func (w *Window) measure(g *get, count int, now time.Time) {
	c := g.c
	first := g.first.IsZero()
	if first {
		g.first = now
		c.noteTM(now.Sub(g.sent), now)
	}
	// Back to back: the rest of an answer, or an answer to a GET that
	// reached the ORDB while it was still sending earlier answers (sent at
	// least tm before the previous data arrived).
	backToBack := !c.lastArrival.IsZero() &&
		(!first || !g.sent.After(c.lastArrival.Add(-c.tm())))
	if gap := now.Sub(c.lastArrival); backToBack && gap >= 0 {
		c.sample(count, gap, now, w.cfg.RateHalfLife)
	} else if d := now.Sub(g.sent).Seconds(); d > 0 {
		c.rLow = max(c.rLow, float64(count)/d)
	}
	c.lastArrival = now
	c.failures = 0
	for i := 0; i < len(w.circs) && !w.over; i++ {
		if o := w.circs[i]; w.checkSlow(o, now) {
			i--
		}
	}
}

// checkSlow replaces c if its rate is far below the median of the active
// circuits (the Peersm specification: "a too slow rate compared to
// others").
func (w *Window) checkSlow(c *circuit, now time.Time) (replaced bool) {
	if c.state != active || c.sampled < w.cfg.SlowWarmup {
		return false
	}
	var rates []float64
	n := 0
	for _, o := range w.circs {
		if o.state == active {
			n++
			if o.sampled >= w.cfg.SlowWarmup {
				rates = append(rates, o.rateNow(now, w.resumed))
			}
		}
	}
	if n < w.cfg.Circuits || len(rates) < 3 {
		return false // one replacement at a time: no churn among many slowish circuits
	}
	slices.Sort(rates)
	if c.rateNow(now, w.resumed) < w.cfg.SlowRatio*rates[(len(rates)-1)/2] { // the lower median
		w.replace(c, WhySlow)
		return true
	}
	return false
}

func (w *Window) endGet(ev End, now time.Time) {
	g := w.gets[ev.RequestID]
	if g == nil || g.c.id != ev.Circuit {
		return
	}
	c := g.c
	if ev.Reason == proto.DBEndUnavailable && w.live && !g.desc {
		if g.lo < w.liveHead {
			// Published, yet this ORDB could not get it (routing can
			// fail: its counter ran out): ask again at once, blaming
			// nobody. At the read position, a second miss waits
			// LiveRetry; misses there for LiveSkipAfter mean the chunks
			// are gone from what is kept (the fetch fell behind): as a
			// live player would, reading jumps a window behind the
			// newest chunk known, and the heads that come from there
			// say whether it must go further (liveHeadIs).
			w.abandon(g)
			if g.lo > w.base || g.hi <= w.base {
				return
			}
			if w.unavailAtBase++; w.unavailAtBase == 1 {
				w.unavailSince = now
				return
			}
			if now.Sub(w.unavailSince) >= w.cfg.LiveSkipAfter {
				if to := w.liveHead - min(w.liveHead, uint64(w.cfg.MinWindow)); to > w.base {
					w.skipLive(to, now)
					return
				}
				// The newest head known is stale too (nothing came for
				// long): ask the descriptor again, whose DB_LIVE_START
				// says where the stream stands now (descriptor).
				w.unavailSince = now
				w.rejoin(now)
			}
			w.holding, w.liveHold, w.liveRetry = true, g.lo, now.Add(w.cfg.LiveRetry)
			return
		}
		// Not published yet: wait, and blame nobody.
		if !w.holding || g.lo < w.liveHold {
			w.liveHold = g.lo
		}
		w.holding = true
		w.liveRetry = now.Add(w.cfg.LiveRetry)
		w.abandon(g)
		return
	}
	w.abandon(g)
	if ev.Reason == proto.DBEndFinished {
		return // the ORDB stopped early; ask the rest again
	}
	c.failures++
	w.failed()
	if !w.over && c.failures >= 2 {
		w.replace(c, WhyUnavailable)
	}
}

// failed counts a failed GET and fails the download after too many with
// no progress.
func (w *Window) failed() {
	w.failStreak++
	if w.failStreak >= w.cfg.MaxFailures && !w.over {
		w.fail(ErrUnavailable)
	}
}

// finish forgets a GET that has all its chunks.
func (w *Window) finish(g *get) { w.abandon(g) }

// abandon forgets a GET; the chunks it did not deliver become free to ask
// again.
func (w *Window) abandon(g *get) {
	if w.gets[g.id] != g {
		return
	}
	delete(w.gets, g.id)
	c := g.c
	c.gets = slices.DeleteFunc(c.gets, func(x *get) bool { return x == g })
	c.outstanding -= g.left
	for i := g.lo; i < g.hi; i++ {
		if g.got&(1<<(i-g.lo)) == 0 && w.inflight.clear(i) {
			w.scan = min(w.scan, i)
		}
	}
	g.left = 0
}

// replace drops circuit c, resumes its GETs elsewhere and asks the shell
// for another circuit.
func (w *Window) replace(c *circuit, why Why) {
	for _, g := range slices.Clone(c.gets) {
		w.abandon(g)
	}
	w.circs = slices.DeleteFunc(w.circs, func(x *circuit) bool { return x == c })
	w.actions = append(w.actions, ReplaceCircuit{Circuit: c.id, Why: why})
	w.stats.Replaced++
	if why != WhySlow {
		w.failed()
	}
}

func (w *Window) seek(chunk uint64, now time.Time) {
	if !w.known {
		w.pendingSeek, w.hasPendingSeek = chunk, true
		return
	}
	if w.end == 0 {
		return
	}
	if chunk >= w.end {
		chunk = w.end - 1
	}
	if w.live && chunk < w.evicted {
		chunk = w.evicted
	}
	w.base, w.scan, w.top = chunk, chunk, chunk
	// GETs not wholly inside the new window would hold circuits up or
	// stretch it; their chunks are asked again if still wanted.
	hi := chunk + uint64(w.win)
	for _, c := range w.circs {
		for _, g := range slices.Clone(c.gets) {
			if !g.desc && (g.lo < chunk || g.hi > hi) {
				w.actions = append(w.actions, Cancel{Circuit: c.id, RequestID: g.id})
				w.abandon(g)
			} else if !g.desc {
				w.top = max(w.top, g.hi)
			}
		}
	}
	w.scan = chunk
	w.advance()
}

// advance delivers the held chunks at the read position, wraps a static
// content's read position to its first undelivered chunk at the end, and
// finishes when everything is held.
func (w *Window) advance() {
	if !w.known || w.over {
		return
	}
	for {
		from := w.base
		w.base = nextClear(&w.held, &none, w.base, w.end)
		w.deliver(from, w.base)
		if w.live {
			if w.base != from {
				w.unavailAtBase = 0
			}
			w.evict()
			break
		}
		if w.nheld >= w.end {
			w.deliver(0, w.end) // what a seek skipped, in order
			w.cancelAll()
			w.over = true
			w.actions = append(w.actions, Done{})
			return
		}
		if w.base < w.end {
			break
		}
		// At the end: back to what a seek skipped.
		w.base = nextClear(&w.delivered, &none, 0, w.end)
		w.scan, w.top = w.base, w.base
	}
	w.scan = max(w.scan, w.base)
	w.top = max(w.top, w.base)
}

// none is the empty set.
var none bitset

// deliver hands the held chunks of [from, to) to Deliver, once each: a
// static content's chunks already delivered before a seek are skipped.
func (w *Window) deliver(from, to uint64) {
	if w.live {
		if to > from {
			w.actions = append(w.actions, Deliver{From: from, To: to})
			w.stats.Delivered += to - from
		}
		return
	}
	for i := from; i < to; {
		lo := nextClear(&w.delivered, &none, i, to)
		if lo >= to {
			return
		}
		hi := nextSet(&w.delivered, lo, to)
		for j := lo; j < hi; j++ {
			w.delivered.set(j)
		}
		w.actions = append(w.actions, Deliver{From: lo, To: hi})
		w.stats.Delivered += hi - lo
		i = hi
	}
}

// liveHeadIs takes the length of the newest live head the shell holds:
// a read position more than LiveKeep windows behind it is past what the
// publisher keeps, and jumps to two windows behind the head (where an
// ORDB starts a new reader).
func (w *Window) liveHeadIs(length uint64, now time.Time) {
	if !w.live || length <= w.liveHead {
		return
	}
	w.liveHead = length
	keep := uint64(w.cfg.LiveKeep * w.cfg.MinWindow)
	if w.base+keep < length {
		w.skipLive(length-2*uint64(w.cfg.MinWindow), now)
	}
}

// skipLive jumps a live stream's read position ahead to chunk to, telling
// the shell (Skipped) and counting the chunks passed over.
func (w *Window) skipLive(to uint64, now time.Time) {
	if to <= w.base {
		return
	}
	from := w.base
	w.stats.Skipped += to - from
	w.actions = append(w.actions, Skipped{From: from, To: to})
	w.holding, w.unavailAtBase = false, 0
	w.seek(to, now)
}

// evict hands a live stream's chunks more than LiveKeep windows behind the
// read position to Evict, a window at a time.
func (w *Window) evict() {
	keep := uint64(w.cfg.LiveKeep * w.cfg.MinWindow)
	if w.base < keep {
		return
	}
	if below := w.base - keep; below >= w.evicted+uint64(w.cfg.MinWindow) {
		w.evicted = below
		w.held.trim(below)
		w.inflight.trim(below)
		w.actions = append(w.actions, Evict{Below: below})
	}
}

// refill promotes spares, then tops up every active circuit's pipeline,
// the fastest first so that it gets the lowest (most urgent) chunks.
func (w *Window) refill(now time.Time) {
	if w.over {
		return
	}
	w.promote()
	if !w.known {
		w.askDescriptor(now)
		return
	}
	w.win = w.window()
	w.byRate = w.byRate[:0]
	for _, c := range w.circs {
		if c.state == active {
			w.byRate = append(w.byRate, c)
		}
	}
	slices.SortStableFunc(w.byRate, func(a, b *circuit) int {
		ra, rb := a.rate(), b.rate()
		switch {
		case ra > rb:
			return -1
		case ra < rb:
			return 1
		}
		return 0
	})
	if len(w.byRate) == 0 {
		return
	}
	// Holes first: chunks below the highest asked that are free again (a
	// GET that failed, stalled or was cut short) hold the read position
	// up, so each goes at once to the circuit expected to bring it
	// soonest, even past its target.
	for {
		lo, hi, ok := w.next()
		if !ok || lo >= w.top {
			break
		}
		w.send(w.soonest(), lo, hi, false, now)
	}
	var total float64
	for _, c := range w.byRate {
		total += c.rate()
	}
	for _, c := range w.byRate {
		target := w.target(c)
		for c.outstanding < target && !w.tooLate(c, total) {
			lo, hi, ok := w.next()
			if !ok {
				return
			}
			w.send(c, lo, hi, false, now)
		}
	}
}

// soonest returns the active circuit expected to deliver a new GET first:
// after what it has outstanding, at its rate, plus its tm. Circuits not
// measured yet come last.
func (w *Window) soonest() *circuit {
	var best *circuit
	var bestAt float64
	for _, c := range w.byRate {
		at := 1e9 + float64(c.outstanding)
		if r, tm := c.rate(), c.tm(); r > 0 && tm > 0 {
			at = float64(c.outstanding)/r + tm.Seconds()
		}
		if best == nil || at < bestAt {
			best, bestAt = c, at
		}
	}
	return best
}

// tooLate reports whether one more GET on c would make it finish after
// all circuits together (total, chunks per second) would finish what is
// left of a static content: at the tail, the last chunks go to the
// circuits that bring them soonest rather than queue on a slow one.
func (w *Window) tooLate(c *circuit, total float64) bool {
	r := c.rate()
	if w.live || r == 0 || total == 0 || c.outstanding == 0 {
		return false
	}
	left := float64(w.end - w.nheld)
	return float64(c.outstanding+w.cfg.ChunksPerGet)/r > left/total
}

// target is how many chunks circuit c should have outstanding so that it
// never idles: what arrives during one tm at its rate, half again for the
// noise (at least MinPipeline of its rate), plus two GETs. This is the
// Peersm specification's "send a new GET after the C - c block", with
// c = rate x tm. Before c's first answer, its first block.
func (w *Window) target(c *circuit) int {
	g := w.cfg.ChunksPerGet
	tm, r := c.tm(), c.rate()
	if tm == 0 || r == 0 {
		return w.cfg.BlockGets * g
	}
	ahead := max(1.5*tm.Seconds(), w.cfg.MinPipeline.Seconds())
	return min(int(r*ahead)+2*g, w.cfg.MaxWindow/w.cfg.Circuits)
}

// window sizes the window: every circuit's target in flight, plus what
// arrives from all circuits while one holds the read position, plus a GET
// per circuit; clamped to [MinWindow, MaxWindow]. One holds it while it
// drains its target, or while it brings nothing for up to its stall
// timeout before it is replaced: the others must not run dry meanwhile
// (on paths of a few ms, a window of only the drain time is a few tens of
// ms of data, and a circuit's relays paused that long idled them all).
func (w *Window) window() int {
	var inflight, total, hold float64
	n := 0
	for _, c := range w.circs {
		if c.state != active {
			continue
		}
		n++
		t := float64(w.target(c))
		inflight += t
		if r := c.rate(); r > 0 {
			total += r
			hold = max(hold, t/r)
			if c.tm() > 0 {
				hold = max(hold, w.stallTimeout(c).Seconds())
			}
		}
	}
	win := inflight + total*hold + float64(n*w.cfg.ChunksPerGet)
	return int(min(max(win, float64(w.cfg.MinWindow)), float64(w.cfg.MaxWindow)))
}

// next returns the lowest run of free chunks in the window, at most one
// GET long.
func (w *Window) next() (lo, hi uint64, ok bool) {
	limit := min(w.base+uint64(w.win), w.end)
	if w.holding {
		limit = min(limit, w.liveHold)
	}
	lo = nextClear(&w.held, &w.inflight, max(w.scan, w.base), limit)
	w.scan = lo
	if lo >= limit {
		return 0, 0, false
	}
	stop := min(limit, lo+uint64(w.cfg.ChunksPerGet))
	hi = min(nextSet(&w.held, lo, stop), nextSet(&w.inflight, lo, stop))
	return lo, hi, true
}

// askDescriptor sends the descriptor GET on an active circuit if none is
// outstanding, preferring circuits that have failed least.
func (w *Window) askDescriptor(now time.Time) {
	var best []*circuit
	for _, c := range w.circs {
		if c.state != active {
			continue
		}
		if len(c.gets) > 0 {
			return // outstanding already
		}
		if len(best) == 0 || c.failures < best[0].failures {
			best = append(best[:0], c)
		} else if c.failures == best[0].failures {
			best = append(best, c)
		}
	}
	if len(best) > 0 {
		w.send(best[w.rng.IntN(len(best))], 0, 0, true, now)
	}
}

// rejoin asks a live stream's descriptor again, on the active circuit
// with the fewest failures, unless such a GET is out already.
func (w *Window) rejoin(now time.Time) {
	var best *circuit
	for _, c := range w.circs {
		for _, g := range c.gets {
			if g.desc {
				return
			}
		}
		if c.state == active && (best == nil || c.failures < best.failures) {
			best = c
		}
	}
	if best != nil {
		w.send(best, 0, 0, true, now)
	}
}

// promote makes random spares active until Config.Circuits are.
func (w *Window) promote() {
	n := 0
	for _, c := range w.circs {
		if c.state == active {
			n++
		}
	}
	for n < w.cfg.Circuits {
		var spares []*circuit
		for _, c := range w.circs {
			if c.state == spare {
				spares = append(spares, c)
			}
		}
		if len(spares) == 0 {
			return
		}
		spares[w.rng.IntN(len(spares))].state = active
		n++
	}
}

// send asks [lo, hi) on c (the descriptor if desc).
func (w *Window) send(c *circuit, lo, hi uint64, desc bool, now time.Time) {
	g := &get{c: c, lo: lo, hi: hi, sent: now, desc: desc, left: int(hi - lo)}
	if desc {
		g.left = 1
	}
	for {
		g.id = w.rng.Uint64()
		if _, dup := w.gets[g.id]; !dup && g.id != 0 {
			break
		}
	}
	w.gets[g.id] = g
	c.gets = append(c.gets, g)
	c.outstanding += g.left
	for i := lo; i < hi; i++ {
		w.inflight.set(i)
	}
	w.top = max(w.top, hi)
	w.stats.Sent++
	w.stats.Asked += hi - lo
	w.actions = append(w.actions, SendGet{Circuit: c.id, Query: proto.DBQuery{
		HashName:  w.cfg.HashName,
		Chunk:     uint32(lo),
		NbChunks:  uint16(hi - lo),
		Counter:   uint8(w.rng.IntN(proto.MaxCounter)), // below 5: own and relayed queries look alike
		RequestID: g.id,
	}})
}

// outstanding reports whether GET id is outstanding (for tests).
func (w *Window) outstanding(id uint64) bool { return w.gets[id] != nil }
