package window

import (
	"container/heap"
	"fmt"
	"hash"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"time"

	"veil/proto"
)

// This file is a deterministic simulator of a requester's circuits: each
// circuit is a path of a given rate and round trip to an ORDB that answers
// queries in order, one DB_DATA message per up to msgChunks chunks, as
// ordb.Server does. Everything happens in virtual time through one event
// queue; the same config (seed included) gives the same run.

// simCirc describes one simulated circuit.
type simCirc struct {
	Rate      float64       // bytes per second from the ORDB to us
	RTT       time.Duration // round trip, without transfer time
	Jitter    float64       // each message waits up to Jitter x RTT/2 more
	FailAt    time.Duration // dies (the shell sees CircuitFailed), 0 = never
	StallAt   time.Duration // stops answering with no error, 0 = never
	CorruptAt time.Duration // the first answer after this fails verification
	SlowAt    time.Duration // from then on, the rate is divided by SlowBy
	SlowBy    float64
	// Hiccups: in every period of HiccupEvery (from HiccupEvery on), the
	// path sends nothing for HiccupFor (its relays starved of CPU).
	HiccupEvery, HiccupFor time.Duration
	// QueryDelay: each query waits up to this long more (uniformly) on its
	// way to the ORDB: a busy requester, relays or ORDB turning answers
	// into the next GETs late, while the least time to first data stays
	// the round trip.
	QueryDelay time.Duration
}

type simConfig struct {
	Seed        uint64
	Size        uint64    // content bytes (static)
	Live        bool      // a live stream
	LiveStart   uint64    // chunks published at the start; reading starts here
	LiveRate    float64   // live: chunks published per second
	LiveUntil   uint64    // live: stop the run once this chunk is delivered
	Circuits    []simCirc // offered at the start
	Replacement simCirc   // what a replacement circuit is like
	BuildDelay  time.Duration
	MsgChunks   int
	Window      Config
	Seek        []simSeek
	// Pauses: the requester takes in nothing (its process starved, its
	// store busy): what arrives meanwhile is taken at the pause's end,
	// in order; its timers still fire.
	Pauses  []simPause
	MaxTime time.Duration
	Log     io.Writer // if set, a readable line per action
}

type simSeek struct {
	At    time.Duration
	Chunk uint64
}

type simPause struct{ At, For time.Duration }

type simEvKind uint8

const (
	evQuery  simEvKind = iota // a DB_QUERY reaches the ORDB
	evCancel                  // a DB_END FINISHED reaches the ORDB
	evTxDone                  // the ORDB finished sending a message
	evArrive                  // a message reaches us
	evFail                    // the circuit dies
	evBuilt                   // a replacement circuit is ready
	evTick                    // the window's deadline
	evSeek                    // the consumer seeks
)

type simMsg struct {
	req        uint64
	chunk      uint64
	count      int
	desc, end  bool
	endReason  proto.DBEndReason
	fromCircID CircuitID
}

type simEv struct {
	at   time.Duration
	seq  uint64
	kind simEvKind
	c    *simORDB
	q    proto.DBQuery
	msg  simMsg
	n    int
}

type simHeap []*simEv

func (h simHeap) Len() int { return len(h) }
func (h simHeap) Less(i, j int) bool {
	return h[i].at < h[j].at || h[i].at == h[j].at && h[i].seq < h[j].seq
}
func (h simHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *simHeap) Push(x any)   { *h = append(*h, x.(*simEv)) }
func (h *simHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// simORDB is one circuit and the ORDB at its end.
type simORDB struct {
	id          CircuitID
	p           simCirc
	dead        bool // failed, or destroyed by ReplaceCircuit
	busy        bool
	queue       []*simQuery
	lastArrival time.Duration
	lastQuery   time.Duration
	corrupted   bool
}

type simQuery struct {
	q         proto.DBQuery
	next, hi  uint64
	cancelled bool
}

type sim struct {
	cfg   simConfig
	rng   *rand.Rand
	w     *Window
	q     simHeap
	seq   uint64
	now   time.Duration
	start time.Time
	circs map[CircuitID]*simORDB
	nextC CircuitID
	tick  time.Duration // the tick scheduled, -1 if none

	// results and checks
	trace     hash.Hash64
	log       io.Writer // if set, a readable line per action
	chunks    uint64    // static content chunks
	received  bitset    // chunks the "shell" stored
	delivered bitset
	expect    uint64 // next Deliver.From expected
	dups      uint64
	firstAt   time.Duration // first Deliver
	doneAt    time.Duration
	done      bool
	failErr   error
	errs      []string
	maxSpan   uint64
	replaced  map[Why]int
	sends     []SendGet
	sentOn    map[uint64]CircuitID
	badChunks []uint64
	evicted   uint64
	events    int
	seekPos   []uint64
	order     []Deliver
}

func newSim(cfg simConfig) *sim {
	if cfg.MsgChunks == 0 {
		cfg.MsgChunks = 64
	}
	if cfg.BuildDelay == 0 {
		cfg.BuildDelay = time.Second
	}
	if cfg.MaxTime == 0 {
		cfg.MaxTime = time.Hour
	}
	s := &sim{
		cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x5eed)),
		start: time.Unix(1_800_000_000, 0), circs: map[CircuitID]*simORDB{},
		trace: fnv.New64a(), tick: -1, firstAt: -1, replaced: map[Why]int{},
		sentOn: map[uint64]CircuitID{}, log: cfg.Log,
	}
	s.chunks = (cfg.Size + ChunkSize - 1) / ChunkSize
	if cfg.Live {
		s.expect = cfg.LiveStart
	}
	s.w = New(cfg.Window, rand.New(rand.NewPCG(cfg.Seed, 0x77)))
	for _, p := range cfg.Circuits {
		s.addCircuit(p)
	}
	for _, sk := range cfg.Seek {
		s.push(&simEv{at: sk.At, kind: evSeek, n: int(sk.Chunk)})
	}
	return s
}

func (s *sim) t() time.Time { return s.start.Add(s.now) }

func (s *sim) push(e *simEv) {
	s.seq++
	e.seq = s.seq
	heap.Push(&s.q, e)
}

func (s *sim) errorf(format string, args ...any) {
	if len(s.errs) < 20 {
		s.errs = append(s.errs, fmt.Sprintf("%v: ", s.now)+fmt.Sprintf(format, args...))
	}
}

func (s *sim) addCircuit(p simCirc) {
	s.nextC++
	o := &simORDB{id: s.nextC, p: p}
	s.circs[o.id] = o
	if p.FailAt > 0 {
		s.push(&simEv{at: max(p.FailAt, s.now), kind: evFail, c: o})
	}
	s.w.AddCircuit(o.id, s.t())
	s.flush()
}

// owd is a one-way delay with jitter.
func (s *sim) owd(o *simORDB) time.Duration {
	d := o.p.RTT / 2
	if o.p.Jitter > 0 {
		d += time.Duration(s.rng.Float64() * o.p.Jitter * float64(d))
	}
	return d
}

// published is how many chunks a live stream has at the current time.
func (s *sim) published() uint64 {
	return s.cfg.LiveStart + uint64(s.now.Seconds()*s.cfg.LiveRate)
}

// run drives the simulation until the window is over, the live stream is
// read far enough, or nothing is left to happen.
func (s *sim) run() {
	for s.q.Len() > 0 && !s.w.Over() {
		if s.cfg.Live && s.expect >= s.cfg.LiveUntil {
			return
		}
		e := heap.Pop(&s.q).(*simEv)
		s.now = e.at
		if s.now > s.cfg.MaxTime {
			s.errorf("out of time")
			return
		}
		s.events++
		if s.events > 50_000_000 {
			s.errorf("too many events")
			return
		}
		s.step(e)
		s.flush()
	}
	if !s.w.Over() && !(s.cfg.Live && s.expect >= s.cfg.LiveUntil) {
		s.errorf("the run stalled: nothing left to happen, window not over; stats %+v", s.w.Stats())
	}
}

func (s *sim) step(e *simEv) {
	o := e.c
	switch e.kind {
	case evQuery:
		if o.dead || o.p.StallAt > 0 && s.now >= o.p.StallAt {
			return
		}
		sq := &simQuery{q: e.q, next: uint64(e.q.Chunk), hi: uint64(e.q.Chunk) + uint64(e.q.NbChunks)}
		o.queue = append(o.queue, sq)
		if !o.busy {
			s.transmit(o)
		}
	case evCancel:
		for _, sq := range o.queue {
			if sq.q.RequestID == e.q.RequestID {
				sq.cancelled = true
			}
		}
	case evTxDone:
		if o.dead {
			return
		}
		if o.p.StallAt > 0 && s.now >= o.p.StallAt {
			return // stuck for ever: busy stays true
		}
		at := max(o.lastArrival, s.now+s.owd(o))
		o.lastArrival = at
		s.push(&simEv{at: at, kind: evArrive, c: o, msg: e.msg})
		s.transmit(o)
	case evArrive:
		if o.dead {
			return
		}
		for _, p := range s.cfg.Pauses {
			if end := p.At + p.For; s.now >= p.At && s.now < end {
				s.push(&simEv{at: end, kind: evArrive, c: o, msg: e.msg})
				return
			}
		}
		s.arrive(o, e.msg)
	case evFail:
		if o.dead {
			return
		}
		o.dead = true
		s.w.Handle(CircuitFailed{Circuit: o.id}, s.t())
	case evBuilt:
		s.addCircuit(s.cfg.Replacement)
	case evTick:
		if s.tick == s.now {
			s.tick = -1
		}
		s.w.Tick(s.t())
	case evSeek:
		s.expect = uint64(e.n)
		s.seekPos = append(s.seekPos, uint64(e.n))
		s.w.Handle(Seek{Chunk: uint64(e.n)}, s.t())
	}
}

// transmit starts the ORDB's next message, if any.
func (s *sim) transmit(o *simORDB) {
	o.busy = false
	for len(o.queue) > 0 {
		sq := o.queue[0]
		if sq.cancelled || sq.next >= sq.hi && !sq.q.WantsDescriptor() {
			o.queue = o.queue[1:]
			continue
		}
		msg := simMsg{req: sq.q.RequestID, fromCircID: o.id}
		var tx time.Duration
		switch {
		case sq.q.WantsDescriptor():
			msg.desc = true
			o.queue = o.queue[1:]
		case s.cfg.Live && sq.hi > s.published() || !s.cfg.Live && sq.hi > s.chunks:
			msg.end, msg.endReason = true, proto.DBEndUnavailable
			o.queue = o.queue[1:]
		default:
			k := min(uint64(s.cfg.MsgChunks), sq.hi-sq.next)
			msg.chunk, msg.count = sq.next, int(k)
			sq.next += k
			rate := o.p.Rate
			if o.p.SlowAt > 0 && s.now >= o.p.SlowAt {
				rate /= o.p.SlowBy
			}
			tx = time.Duration(float64(k*ChunkSize) / rate * float64(time.Second))
			if sq.next >= sq.hi {
				o.queue = o.queue[1:]
			}
		}
		o.busy = true
		if e := o.p.HiccupEvery; e > 0 && s.now >= e {
			if in := s.now % e; in < o.p.HiccupFor {
				tx += o.p.HiccupFor - in
			}
		}
		s.push(&simEv{at: s.now + tx, kind: evTxDone, c: o, msg: msg})
		return
	}
}

func (s *sim) arrive(o *simORDB, m simMsg) {
	now := s.t()
	switch {
	case m.desc:
		d := Descriptor{Circuit: o.id, RequestID: m.req, Size: s.cfg.Size}
		if s.cfg.Live {
			d.Live, d.Start = true, s.cfg.LiveStart
		}
		s.w.Handle(d, now)
	case m.end:
		s.w.Handle(End{Circuit: o.id, RequestID: m.req, Reason: m.endReason}, now)
	default:
		if o.p.CorruptAt > 0 && s.now >= o.p.CorruptAt && !o.corrupted {
			o.corrupted = true
			s.badChunks = append(s.badChunks, m.chunk)
			s.w.Handle(BadChunk{Circuit: o.id, RequestID: m.req, Chunk: m.chunk, Count: m.count}, now)
			return
		}
		for i := m.chunk; i < m.chunk+uint64(m.count); i++ {
			if !s.received.set(i) {
				s.dups++
			}
		}
		s.w.Handle(Data{Circuit: o.id, RequestID: m.req, Chunk: m.chunk, Count: m.count}, now)
	}
}

// flush carries out the window's actions and checks the invariants.
func (s *sim) flush() {
	for _, a := range s.w.Ready() {
		fmt.Fprintf(s.trace, "%d %T %v\n", s.now, a, a)
		if s.log != nil {
			fmt.Fprintf(s.log, "%9.3fms %s\n", float64(s.now)/1e6, actionString(a))
		}
		switch a := a.(type) {
		case SendGet:
			s.sends = append(s.sends, a)
			s.sentOn[a.Query.RequestID] = a.Circuit
			q := a.Query
			if q.Counter >= proto.MaxCounter {
				s.errorf("counter %d", q.Counter)
			}
			for i := uint64(q.Chunk); i < uint64(q.Chunk)+uint64(q.NbChunks); i++ {
				if s.received.get(i) {
					s.errorf("GET %d+%d asks chunk %d, already held", q.Chunk, q.NbChunks, i)
					break
				}
			}
			o := s.circs[a.Circuit]
			if o == nil || o.dead {
				continue
			}
			at := s.now + s.owd(o)
			if o.p.QueryDelay > 0 {
				// Queries stay in order on their stream.
				at = max(at+time.Duration(s.rng.Float64()*float64(o.p.QueryDelay)), o.lastQuery)
				o.lastQuery = at
			}
			s.push(&simEv{at: at, kind: evQuery, c: o, q: q})
		case Cancel:
			if o := s.circs[a.Circuit]; o != nil && !o.dead {
				s.push(&simEv{at: s.now + s.owd(o), kind: evCancel, c: o, q: proto.DBQuery{RequestID: a.RequestID}})
			}
		case ReplaceCircuit:
			s.replaced[a.Why]++
			if o := s.circs[a.Circuit]; o != nil {
				o.dead = true
			}
			s.push(&simEv{at: s.now + s.cfg.BuildDelay, kind: evBuilt})
		case Deliver:
			// Chunks come in reading order: the first not delivered
			// from the read position, or after the end (a static read
			// that seeked) the first not delivered at all.
			want := s.expect
			if !s.cfg.Live {
				if want = nextClear(&s.delivered, &none, s.expect, s.chunks); want == s.chunks {
					want = nextClear(&s.delivered, &none, 0, s.chunks)
				}
			}
			if a.From != want {
				s.errorf("Deliver from %d, expected %d", a.From, want)
			}
			for i := a.From; i < a.To; i++ {
				if !s.received.get(i) {
					s.errorf("Deliver of chunk %d never received", i)
					break
				}
				if !s.delivered.set(i) {
					s.errorf("chunk %d delivered twice", i)
					break
				}
			}
			s.order = append(s.order, a)
			s.expect = a.To
			if s.firstAt < 0 {
				s.firstAt = s.now
			}
		case Evict:
			if a.Below < s.evicted {
				s.errorf("Evict going back: %d after %d", a.Below, s.evicted)
			}
			s.evicted = a.Below
		case Done:
			s.done, s.doneAt = true, s.now
			if n := s.delivered.count(0, s.chunks); n != s.chunks {
				s.errorf("Done with %d of %d chunks delivered", n, s.chunks)
			}
		case Fail:
			s.failErr = a.Err
		}
	}
	st := s.w.Stats()
	s.maxSpan = max(s.maxSpan, st.Span)
	if st.Span > uint64(s.cfg.Window.MaxWindow) {
		s.errorf("span %d > MaxWindow %d", st.Span, s.cfg.Window.MaxWindow)
	}
	if d := s.w.Deadline(); !d.IsZero() {
		at := max(d.Sub(s.start), s.now)
		if s.tick < 0 || at < s.tick {
			s.tick = at
			s.push(&simEv{at: at, kind: evTick})
		}
	}
}

// efficiency is the achieved rate over capacity (bytes per second).
func (s *sim) efficiency(capacity float64) float64 {
	if !s.done || s.doneAt <= 0 {
		return 0
	}
	return float64(s.cfg.Size) / s.doneAt.Seconds() / capacity
}

// actionString is an action as one line of a golden trace.
func actionString(a Action) string {
	switch a := a.(type) {
	case SendGet:
		q := a.Query
		if q.WantsDescriptor() {
			return fmt.Sprintf("get   c%d descriptor counter %d id %016x", a.Circuit, q.Counter, q.RequestID)
		}
		return fmt.Sprintf("get   c%d %d+%d counter %d id %016x", a.Circuit, q.Chunk, q.NbChunks, q.Counter, q.RequestID)
	case Cancel:
		return fmt.Sprintf("cancel c%d id %016x", a.Circuit, a.RequestID)
	case ReplaceCircuit:
		return fmt.Sprintf("replace c%d (%v)", a.Circuit, a.Why)
	case Deliver:
		return fmt.Sprintf("deliver %d..%d", a.From, a.To)
	case Evict:
		return fmt.Sprintf("evict below %d", a.Below)
	case Done:
		return "done"
	case Fail:
		return fmt.Sprintf("fail: %v", a.Err)
	}
	return fmt.Sprintf("%T %v", a, a)
}
