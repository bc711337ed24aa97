package ordb

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"veil/chunkstore"
	"veil/chunkstore/content"
	"veil/proto"
	"veil/window"
)

// getCirc is one circuit of a Get: its stream, pipelined queries and the
// GETs awaiting an answer. fifo belongs to Run's goroutine; the stream to
// the circuit's own goroutines.
type getCirc struct {
	g        *Get
	id       window.CircuitID
	fifo     []sentGet // GETs sent, oldest first, not yet wholly answered
	q        chan proto.DBQuery
	cancel   context.CancelFunc
	finished atomic.Bool   // end the stream with DB_END FINISHED
	done     chan struct{} // closed when its goroutines have returned
	first    CellStream    // the stream to start with (nil: open one)

	// spare is a second stream on the circuit, opened once the first is
	// up, for the stream a seek's restart starts (Get.restart): the new
	// GETs leave at once, without waiting for a stream to open. Taken,
	// or closed with the circuit's goroutines.
	spareMu  sync.Mutex
	spare    CellStream
	spareOff bool // taken, or the goroutines ended: a spare opened now is closed
}

// sentGet is a GET awaiting (the rest of) its answer.
type sentGet struct {
	id     uint64
	lo, hi uint64 // chunks asked, clamped to the content
	next   uint64 // where the answer stands
	desc   bool
	// cancelled: the window cancelled it (a seek); its answer is dropped
	// with the stream (Get.restart).
	cancelled bool
	// resumed: part of its answer came against a live head older than
	// ours (arrStale) and the window was told to ask the rest again.
	resumed bool
}

// cancelData marks GET id cancelled and reports whether it is a data GET
// still awaiting (part of) its answer on this stream.
func (c *getCirc) cancelData(id uint64) bool {
	for i := range c.fifo {
		if c.fifo[i].id == id {
			c.fifo[i].cancelled = true
			return !c.fifo[i].desc
		}
	}
	return false
}

// finishWait bounds the DB_END FINISHED a finished Get sends on each
// stream.
const finishWait = 5 * time.Second

// maxQueued bounds the queries waiting for the writer. The window keeps
// far fewer in flight on a circuit (MaxWindow / Circuits / 64 ~ 100): a
// full queue means the stream is wedged.
const maxQueued = 1024

// arrival is what a circuit's goroutines tell Run.
type arrival struct {
	c      *getCirc
	at     time.Time
	kind   arrKind
	desc   proto.DBConnected
	lo     uint64 // arrRange, arrBad: the chunks
	n      int
	data   []byte // arrRange: the chunks' bytes, when Deliver wants them
	reason proto.DBEndReason
	err    error // arrFatal
	// arrDescriptor of a live stream: the DB_LIVE_START that came before.
	liveStart uint64
	hasLive   bool
}

type arrKind uint8

const (
	arrRange      arrKind = iota // verified and stored
	arrDescriptor                // verified DB_CONNECTED
	arrEnd                       // DB_END from the ORDB
	arrBad                       // failed verification, or broke the protocol
	arrFailed                    // the stream or circuit is gone
	arrFatal                     // our store failed: the Get cannot go on
	// arrStale: live chunks proven against the head we held when the
	// query left, which another answer has since replaced; nobody's fault,
	// they are asked again with the head we hold now.
	arrStale
)

// newGetCirc starts circuit id's goroutines, on stream first (nil: one
// they open).
func newGetCirc(ctx context.Context, g *Get, id window.CircuitID, first CellStream) *getCirc {
	ctx, cancel := context.WithCancel(ctx)
	c := &getCirc{g: g, id: id, q: make(chan proto.DBQuery, maxQueued), cancel: cancel, done: make(chan struct{}), first: first}
	go func() {
		defer close(c.done)
		c.run(ctx)
	}()
	return c
}

// send queues q for the writer; false if the queue is full.
func (c *getCirc) send(q proto.DBQuery) bool {
	select {
	case c.q <- q:
		return true
	default:
		return false
	}
}

// close stops the circuit's goroutines and closes its stream, after DB_END
// FINISHED if finished.
func (c *getCirc) close(finished bool) {
	c.finished.Store(finished)
	c.cancel()
}

func (c *getCirc) report(ctx context.Context, a arrival) {
	a.c = c
	if a.at.IsZero() {
		a.at = c.g.cfg.Clock.Now()
	}
	select {
	case c.g.arrivals <- a:
	case <-ctx.Done():
	}
}

// takeSpare returns the circuit's spare stream (nil if none is open yet);
// none is kept after.
func (c *getCirc) takeSpare() CellStream {
	c.spareMu.Lock()
	defer c.spareMu.Unlock()
	s := c.spare
	c.spare, c.spareOff = nil, true
	return s
}

// openSpare opens the spare stream, unless taken or ended meanwhile.
func (c *getCirc) openSpare(ctx context.Context) {
	s, err := c.g.cfg.Circuits.OpenStream(ctx, c.id)
	if err != nil {
		return // no spare: a restart opens its stream
	}
	c.spareMu.Lock()
	off := c.spareOff
	if !off {
		c.spare = s
	}
	c.spareMu.Unlock()
	if off {
		s.Close()
	}
}

// run opens the stream, starts the reader and writes the queries; it
// returns once the reader has.
func (c *getCirc) run(ctx context.Context) {
	s := c.first
	if s == nil {
		var err error
		if s, err = c.g.cfg.Circuits.OpenStream(ctx, c.id); err != nil {
			c.report(ctx, arrival{kind: arrFailed, err: err})
			return
		}
	}
	spared := make(chan struct{})
	go func() {
		defer close(spared)
		c.openSpare(ctx)
	}()
	defer func() {
		<-spared
		if sp := c.takeSpare(); sp != nil {
			sp.Close()
		}
	}()
	m := newMsgConn(s) // the reader receives, this goroutine sends
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		<-ctx.Done()
		if !c.finished.Load() {
			s.Close() // unblocks the reader, and a write stuck on the window
		}
	}()
	read := make(chan struct{})
	go func() {
		defer close(read)
		c.read(ctx, m)
	}()
	defer func() { <-read; <-watched }()
	for {
		select {
		case q := <-c.q:
			if err := m.send(q); err != nil {
				c.report(ctx, arrival{kind: arrFailed, err: err})
				s.Close()
				return
			}
		case <-ctx.Done():
			if c.finished.Load() {
				// Bounded: a write waiting on a window the ORDB never
				// reopens would hold Get.Run (closeAll waits for us).
				t := time.AfterFunc(finishWait, func() { s.Close() })
				_ = m.send(proto.DBEnd{Reason: proto.DBEndFinished})
				t.Stop()
			}
			s.Close()
			return
		}
	}
}

// read takes the answers off the stream, verifying and storing every range
// before Run hears of it. It stops at the first failure.
func (c *getCirc) read(ctx context.Context, m *msgConn) {
	g := c.g
	var liveStart uint64 // the DB_LIVE_START before a DB_CONNECTED
	var hasLive bool
	for {
		cmd, msg, err := m.recv()
		if err != nil {
			kind := arrFailed
			if errors.Is(err, ErrProtocol) {
				kind = arrBad
			}
			c.report(ctx, arrival{kind: kind, err: err})
			return
		}
		switch cmd {
		case proto.RelayDBConnected:
			d, err := checkDescriptor(msg, g.cfg.Name)
			if err != nil {
				// A descriptor that is not the one asked for: the GET
				// fails, as the window's doc says.
				c.report(ctx, arrival{kind: arrEnd, reason: proto.DBEndDestroyed})
				continue
			}
			c.report(ctx, arrival{kind: arrDescriptor, desc: d, liveStart: liveStart, hasLive: hasLive})
			liveStart, hasLive = 0, false
		case proto.RelayDBLiveStart:
			ls, err := proto.ParseDBLiveStart(msg)
			if err != nil {
				c.report(ctx, arrival{kind: arrBad, err: err})
				return
			}
			liveStart, hasLive = ls.Chunk, true
		case proto.RelayDBEnd:
			e, err := proto.ParseDBEnd(msg)
			if err != nil {
				c.report(ctx, arrival{kind: arrBad, err: err})
				return
			}
			c.report(ctx, arrival{kind: arrEnd, reason: e.Reason})
		case proto.RelayDBProof:
			a := c.readRange(ctx, m, msg)
			c.report(ctx, a)
			// A stale range (proven against a head ours has replaced)
			// is nobody's fault and leaves the stream in step: the
			// answers after it are read, or their GETs would wait on a
			// stream nobody reads until the window judged the circuit
			// stalled.
			if a.kind != arrRange && a.kind != arrStale {
				return
			}
		default:
			c.report(ctx, arrival{kind: arrBad, err: fmt.Errorf("%w: %v on a GET stream", ErrProtocol, cmd)})
			return
		}
	}
}

// readRange reads the DB_DATA that follows a DB_PROOF, verifies the pair
// against the descriptor's root and stores it.
func (c *getCirc) readRange(ctx context.Context, m *msgConn, proofMsg []byte) arrival {
	g := c.g
	bad := func(err error) arrival { return arrival{kind: arrBad, err: err} }
	pm, err := proto.ParseDBProof(proofMsg)
	if err != nil {
		return bad(err)
	}
	proof, err := content.ParseProof(pm.Proof) // copies
	if err != nil {
		return bad(err)
	}
	cmd, msg, err := m.recv()
	if err != nil {
		return arrival{kind: arrFailed, err: err}
	}
	at := g.cfg.Clock.Now()
	if cmd != proto.RelayDBData {
		return bad(fmt.Errorf("%w: %v where DB_DATA was expected", ErrProtocol, cmd))
	}
	dm, err := proto.ParseDBData(msg)
	if err != nil {
		return bad(err)
	}
	n := dm.NbChunks()
	if dm.Chunk != pm.Chunk || uint32(n) != pm.NbChunks || n == 0 {
		return bad(fmt.Errorf("%w: DB_DATA covers %d+%d, its proof %d+%d", ErrProtocol, dm.Chunk, n, pm.Chunk, pm.NbChunks))
	}
	a := arrival{kind: arrBad, lo: uint64(dm.Chunk), n: n}
	r := content.Range{Start: uint64(dm.Chunk), Proof: proof, Chunks: make([][]byte, 0, n)}
	for i := range n {
		r.Chunks = append(r.Chunks, dm.ChunkData(i))
	}
	if proof.Live {
		// A live pair's chunks share the DB_DATA's timestamp (an ORDB
		// sends one pair per run of chunks appended together).
		r.Times = make([]uint32, n)
		for i := range r.Times {
			r.Times[i] = dm.Timestamp
		}
	}
	if err := g.cfg.Store.Ingest(ctx, g.cfg.Name, r); err != nil {
		if proof.Live && errors.Is(err, chunkstore.ErrNoConsistency) {
			a.kind, a.at, a.err = arrStale, at, err
			return a
		}
		if !isContentErr(err) {
			return arrival{kind: arrFatal, err: fmt.Errorf("storing chunks %d+%d: %w", dm.Chunk, n, err)}
		}
		a.err = err
		return a
	}
	a.kind, a.at = arrRange, at
	if g.cfg.Deliver != nil {
		a.data = clone(dm.Data)
	}
	return a
}

// isContentErr reports whether err says the chunks or their proof are
// wrong (the ORDB's fault), as opposed to our store failing.
func isContentErr(err error) bool {
	for _, e := range []error{content.ErrBadRange, content.ErrBadChunk, content.ErrRootMismatch, content.ErrProofShort,
		content.ErrProofLong, content.ErrNoNode, content.ErrProofMalformed, content.ErrKindMismatch, content.ErrTooLarge} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// checkDescriptor parses a DB_CONNECTED and checks that it hashes to name
// and that its signature holds.
func checkDescriptor(msg []byte, name proto.HashName) (proto.DBConnected, error) {
	d, err := proto.ParseDBConnected(msg)
	if err != nil {
		return d, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	d.PublicKey, d.Root, d.Signature = clone(d.PublicKey), clone(d.Root), clone(d.Signature)
	if content.HashNameOf(d) != name {
		return d, ErrMismatch
	}
	return d, content.CheckDescriptor(d)
}
