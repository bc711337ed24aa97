package window

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"veil/proto"
)

// FuzzWindow drives a Window with random event sequences, as a careless or
// hostile network would (answers to the wrong circuit, for unknown GETs,
// out of range, DB_END at any time, circuits dying, seeks anywhere), and
// checks after every step that nothing panics and the invariants hold:
// every GET asks only chunks the shell does not hold, with a counter below
// 5, within the content and at most ChunksPerGet; chunks are delivered in
// order, once, and only when held; the span stays within MaxWindow; after
// Done or Fail nothing more comes.
func FuzzWindow(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 7, 1, 2, 3, 1, 0, 1, 1, 1, 2, 1, 3, 6, 50, 1, 4})
	f.Add([]byte{0, 0, 0, 0, 0, 7, 0, 0, 9, 5, 80, 1, 0, 1, 1, 3, 1, 6, 200, 1, 2, 2, 0})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 17, 0, 0, 2, 1, 0, 1, 1, 4, 0, 1, 2, 1, 8, 3, 4, 6, 255, 6, 255, 6, 255})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 7, 1, 0, 3, 1, 0, 1, 2, 0, 0, 2, 2, 1, 6, 255, 1, 0, 1, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		fz := &fuzzShell{t: t, data: data, now: time.Unix(1_800_000_000, 0)}
		fz.run()
	})
}

type fuzzShell struct {
	t    *testing.T
	data []byte
	w    *Window
	cfg  Config
	now  time.Time

	circs     []CircuitID // alive, known to the window
	nextC     CircuitID
	gets      []SendGet // outstanding, in send order
	known     bool
	live      bool
	end       uint64
	held      bitset // chunks the shell holds that the window could take
	delivered bitset
	readPos   uint64
	over      bool
	log       []string
}

func (f *fuzzShell) byte() int {
	if len(f.data) == 0 {
		return 0
	}
	b := f.data[0]
	f.data = f.data[1:]
	return int(b)
}

func (f *fuzzShell) fatalf(format string, args ...any) {
	f.t.Helper()
	f.t.Fatalf("at %v: %s\n%s", f.now, fmt.Sprintf(format, args...), strings.Join(f.log[max(0, len(f.log)-45):], "\n"))
}

func (f *fuzzShell) run() {
	seed := uint64(0)
	if len(f.data) >= 8 {
		seed = binary.LittleEndian.Uint64(f.data)
		f.data = f.data[8:]
	}
	f.cfg = DefaultConfig(proto.HashName{1})
	f.cfg.MinWindow, f.cfg.MaxWindow = 256, 1024 // small, so edges are reached
	f.w = New(f.cfg, rand.New(rand.NewPCG(seed, 1)))
	for i := 0; i < 6; i++ {
		f.add()
	}
	for steps := 0; len(f.data) > 0 && steps < 5000; steps++ {
		f.step()
		f.check()
	}
	// Drain: answer everything in order; a static content must finish.
	f.data = nil
	for steps := 0; steps < 5000 && !f.over && f.known && !f.live; steps++ {
		if len(f.gets) == 0 {
			// Nothing outstanding: the window waits for circuits (or
			// time, for a Tick).
			if len(f.circs) < f.cfg.Circuits {
				f.add()
			} else {
				f.now = f.now.Add(time.Second)
				f.w.Tick(f.now)
				f.check()
			}
			if len(f.gets) == 0 {
				f.fatalf("static content stuck: nothing asked, window not over; stats %+v", f.w.Stats())
			}
			continue
		}
		g := f.gets[0]
		if g.Query.WantsDescriptor() {
			f.w.Handle(Descriptor{Circuit: g.Circuit, RequestID: g.Query.RequestID, Size: 0}, f.now)
		} else {
			f.dataFor(g, uint64(g.Query.Chunk), int(g.Query.NbChunks), g.Circuit)
		}
		f.check()
	}
}

func (f *fuzzShell) add() {
	f.nextC++
	f.circs = append(f.circs, f.nextC)
	f.w.AddCircuit(f.nextC, f.now)
	f.check()
}

func (f *fuzzShell) pickGet() (SendGet, bool) {
	if len(f.gets) == 0 {
		return SendGet{}, false
	}
	return f.gets[f.byte()%len(f.gets)], true
}

// dataFor reports chunks [lo, lo+n) as stored, from request g on circuit c.
func (f *fuzzShell) dataFor(g SendGet, lo uint64, n int, c CircuitID) {
	if n <= 0 {
		return
	}
	st := f.w.Stats()
	for i := lo; i < lo+uint64(n) && i < f.end; i++ {
		asked := i >= uint64(g.Query.Chunk) && i < uint64(g.Query.Chunk)+uint64(g.Query.NbChunks)
		if !f.live || asked || i >= st.Base && i < st.Base+uint64(f.cfg.MaxWindow) {
			f.held.set(i)
		}
	}
	f.w.Handle(Data{Circuit: c, RequestID: g.Query.RequestID, Chunk: lo, Count: n}, f.now)
}

func (f *fuzzShell) step() {
	op := f.byte() % 10
	f.log = append(f.log, fmt.Sprintf("op %d st %+v", op, f.w.Stats()))
	switch op {
	case 0:
		f.add()
	case 1, 8: // data for a GET, maybe partial, maybe on the wrong circuit
		g, ok := f.pickGet()
		if !ok || g.Query.WantsDescriptor() {
			return
		}
		off, n := f.byte()%int(g.Query.NbChunks+1), f.byte()%70
		c := g.Circuit
		if op == 8 {
			c = CircuitID(f.byte() % 10)
		}
		f.dataFor(g, uint64(g.Query.Chunk)+uint64(off), n, c)
	case 2:
		if g, ok := f.pickGet(); ok {
			f.w.Handle(End{Circuit: g.Circuit, RequestID: g.Query.RequestID, Reason: proto.DBEndReason(f.byte() % 4)}, f.now)
			f.gets = slices.DeleteFunc(f.gets, func(o SendGet) bool { return o == g }) // ended
		}
	case 3:
		f.w.Handle(CircuitFailed{Circuit: CircuitID(f.byte() % 12)}, f.now)
	case 4:
		if g, ok := f.pickGet(); ok {
			f.w.Handle(BadChunk{Circuit: g.Circuit, RequestID: g.Query.RequestID, Chunk: uint64(g.Query.Chunk), Count: 1}, f.now)
		}
	case 5:
		to := uint64(f.byte()<<8 | f.byte())
		if f.live {
			f.delivered = bitset{}
		}
		f.readPos = to
		f.w.Handle(Seek{Chunk: to}, f.now)
	case 6:
		f.now = f.now.Add(time.Duration(f.byte()) * 20 * time.Millisecond)
		f.w.Tick(f.now)
	case 7:
		g, ok := f.pickGet()
		if !ok {
			return
		}
		size := uint64(f.byte()<<16 | f.byte()<<8 | f.byte())
		live := f.byte()%4 == 0
		start := uint64(f.byte() << 8)
		var have []uint64
		if f.byte()%2 == 0 {
			have = []uint64{uint64(f.byte()) * 0x0101010101010101}
		}
		wasKnown := f.known
		f.w.Handle(Descriptor{Circuit: g.Circuit, RequestID: g.Query.RequestID, Size: size, Live: live, Start: start, Have: have}, f.now)
		if !wasKnown {
			f.known, f.live = true, live
			f.end = (size + ChunkSize - 1) / ChunkSize
			if live {
				f.end = MaxChunks
			}
			if f.readPos == 0 && live {
				f.readPos = start
			}
			for wi, word := range have {
				for b := uint64(0); b < 64; b++ {
					if i := uint64(wi)*64 + b; word&(1<<b) != 0 && i < f.end && (!live || i >= start) {
						f.held.set(i)
					}
				}
			}
		}
	case 9:
		switch b := f.byte(); {
		case b > 250:
			f.w.Stop()
		case b < 64:
			// The newest live head the shell holds (ignored unless live).
			f.w.Handle(LiveHead{Length: f.readPos + uint64(b)*128}, f.now)
		}
	}
	f.now = f.now.Add(time.Millisecond)
}

// check takes the window's actions and checks every invariant.
func (f *fuzzShell) check() {
	f.t.Helper()
	for _, a := range f.w.Ready() {
		f.log = append(f.log, fmt.Sprintf("%T%+v", a, a))
		if f.over {
			f.fatalf("%T %v after the window was over", a, a)
		}
		switch a := a.(type) {
		case SendGet:
			q := a.Query
			if !slices.Contains(f.circs, a.Circuit) {
				f.fatalf("GET on unknown circuit %d", a.Circuit)
			}
			if q.Counter >= proto.MaxCounter || q.NbChunks > uint16(f.cfg.ChunksPerGet) || q.HashName != f.cfg.HashName {
				f.fatalf("bad GET %+v", q)
			}
			if q.WantsDescriptor() {
				if f.known && !f.live {
					f.fatalf("descriptor asked again") // a live stream may ask it again (rejoin)
				}
			} else {
				if !f.known || q.NbChunks == 0 || uint64(q.Chunk)+uint64(q.NbChunks) > f.end {
					f.fatalf("GET %+v (content of %d chunks, known %v)", q, f.end, f.known)
				}
				for i := uint64(q.Chunk); i < uint64(q.Chunk)+uint64(q.NbChunks); i++ {
					if f.held.get(i) {
						f.fatalf("GET %d+%d asks held chunk %d", q.Chunk, q.NbChunks, i)
					}
				}
			}
			for _, g := range f.gets {
				if g.Query.RequestID == q.RequestID {
					f.fatalf("request ID %d reused", q.RequestID)
				}
			}
			f.gets = append(f.gets, a)
		case Cancel:
			n := len(f.gets)
			f.gets = slices.DeleteFunc(f.gets, func(g SendGet) bool { return g.Query.RequestID == a.RequestID && g.Circuit == a.Circuit })
			if len(f.gets) != n-1 {
				f.fatalf("Cancel of unknown GET %v", a)
			}
		case ReplaceCircuit:
			if !slices.Contains(f.circs, a.Circuit) {
				f.fatalf("ReplaceCircuit of unknown circuit %v", a)
			}
			f.circs = slices.DeleteFunc(f.circs, func(c CircuitID) bool { return c == a.Circuit })
			f.gets = slices.DeleteFunc(f.gets, func(g SendGet) bool { return g.Circuit == a.Circuit })
		case Deliver:
			if a.From >= a.To || a.To > f.end {
				f.fatalf("Deliver %v of a content of %d chunks", a, f.end)
			}
			for i := a.From; i < a.To; i++ {
				if !f.held.get(i) {
					f.fatalf("Deliver %v: chunk %d not held", a, i)
				}
				if !f.delivered.set(i) {
					f.fatalf("Deliver %v: chunk %d delivered twice", a, i)
				}
			}
		case Skipped:
			if !f.live || a.To <= a.From {
				f.fatalf("%v (live %v)", a, f.live)
			}
			f.delivered, f.readPos = bitset{}, a.To
		case Evict:
		case Done:
			f.over = true
			if f.live || f.delivered.count(0, f.end) != f.end {
				f.fatalf("Done with %d of %d delivered (live %v)", f.delivered.count(0, f.end), f.end, f.live)
			}
		case Fail:
			f.over = true
		default:
			f.fatalf("unknown action %T", a)
		}
	}
	// The window forgets GETs whose chunks all arrived; so do we.
	f.gets = slices.DeleteFunc(f.gets, func(g SendGet) bool {
		if g.Query.WantsDescriptor() {
			return !f.w.outstanding(g.Query.RequestID)
		}
		return f.held.count(uint64(g.Query.Chunk), uint64(g.Query.Chunk)+uint64(g.Query.NbChunks)) == uint64(g.Query.NbChunks) && !f.w.outstanding(g.Query.RequestID)
	})
	st := f.w.Stats()
	if st.Span > uint64(f.cfg.MaxWindow) || st.InFlight < 0 {
		f.fatalf("stats %+v", st)
	}
	if f.over != f.w.Over() {
		f.fatalf("over %v, window says %v", f.over, f.w.Over())
	}
}
