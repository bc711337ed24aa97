package ordb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"veil/chunkstore"
	"veil/circuits"
	"veil/proto"
	"veil/window"
)

// getNet is a small network on 127.0.0.1: a requester, relays, and ORDBs
// serving one published content through a real Server.
type getNet struct {
	req    *ordbNode
	relays []*ordbNode
	ordbs  []*ordbNode
	pub    *chunkstore.Store
	name   proto.HashName
	data   []byte
}

func newGetNet(t testing.TB, size, relays, ordbs int) *getNet {
	t.Helper()
	n := &getNet{req: newORDBNode(t)}
	n.pub, n.name, n.data = publish(t, size)
	srv := &Server{Store: n.pub}
	for range relays {
		n.relays = append(n.relays, newORDBNode(t))
	}
	for range ordbs {
		o := newORDBNode(t)
		o.sw.Handle("ordb", func(s *circuits.Stream) { srv.Serve(s) })
		n.ordbs = append(n.ordbs, o)
	}
	return n
}

// testCircuits is GetCircuits over real 3-hop circuits of a getNet. wrap,
// if set, wraps the stream of a circuit (by the order it was built, from
// 0); queries counts the DB_QUERY chunk ranges asked.
type testCircuits struct {
	t     testing.TB
	net   *getNet
	paths [][]proto.NodeDescriptor // if set, the paths to build, in turn

	mu       sync.Mutex
	built    int
	circs    map[window.CircuitID]*circuits.Circuit
	order    map[window.CircuitID]int
	wrap     func(order int, s CellStream) CellStream
	replaced []window.Why
	gone     map[int]bool // the orders of the circuits replaced
	asked    [][2]uint64  // DB_QUERY ranges sent (not the descriptor's)
	dataSeen map[window.CircuitID]int
}

func newTestCircuits(t testing.TB, net *getNet) *testCircuits {
	return &testCircuits{t: t, net: net, circs: map[window.CircuitID]*circuits.Circuit{},
		order: map[window.CircuitID]int{}, dataSeen: map[window.CircuitID]int{}, gone: map[int]bool{}}
}

// build makes a new 3-hop circuit: two relays then an ORDB, varied with
// the circuit's number.
func (tc *testCircuits) build(ctx context.Context) (window.CircuitID, error) {
	tc.mu.Lock()
	k := tc.built
	tc.built++
	tc.mu.Unlock()
	var path []proto.NodeDescriptor
	if len(tc.paths) > 0 {
		path = tc.paths[k%len(tc.paths)]
	} else {
		rs, os := tc.net.relays, tc.net.ordbs
		path = []proto.NodeDescriptor{rs[k%len(rs)].desc, rs[(k+1+k/len(rs))%len(rs)].desc, os[k%len(os)].desc}
		if path[0].ID == path[1].ID {
			path[1] = rs[(k+1)%len(rs)].desc
		}
	}
	bctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	c, err := tc.net.req.sw.Build(bctx, path)
	if err != nil {
		return 0, err
	}
	id := window.CircuitID(c.ID())
	tc.mu.Lock()
	tc.circs[id], tc.order[id] = c, k
	tc.mu.Unlock()
	return id, nil
}

func (tc *testCircuits) initial(n int) []window.CircuitID {
	var ids []window.CircuitID
	for range n {
		id, err := tc.build(context.Background())
		if err != nil {
			tc.t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

func (tc *testCircuits) circuit(id window.CircuitID) *circuits.Circuit {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return tc.circs[id]
}

func (tc *testCircuits) OpenStream(ctx context.Context, id window.CircuitID) (CellStream, error) {
	c := tc.circuit(id)
	if c == nil {
		return nil, fmt.Errorf("no circuit %d", id)
	}
	s, err := c.OpenStream(ctx, "ordb")
	if err != nil {
		return nil, err
	}
	var cs CellStream = &countStream{CellStream: s, tc: tc, id: id}
	tc.mu.Lock()
	wrap, k := tc.wrap, tc.order[id]
	tc.mu.Unlock()
	if wrap != nil {
		cs = wrap(k, cs)
	}
	return cs, nil
}

func (tc *testCircuits) Replace(ctx context.Context, id window.CircuitID, why window.Why) (window.CircuitID, error) {
	tc.mu.Lock()
	c := tc.circs[id]
	delete(tc.circs, id)
	tc.replaced = append(tc.replaced, why)
	tc.gone[tc.order[id]] = true
	tc.mu.Unlock()
	if c != nil {
		c.Close()
	}
	return tc.build(ctx)
}

func (tc *testCircuits) closeAll() {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	for _, c := range tc.circs {
		c.Close()
	}
}

// countStream records the queries sent and the DB_DATA cells received.
type countStream struct {
	CellStream
	tc  *testCircuits
	id  window.CircuitID
	asm proto.Assembler // what WriteCell sends, as messages
}

func (s *countStream) WriteCell(cmd proto.RelayCommand, data []byte) error {
	if mcmd, msg, err := s.asm.Feed(cmd, data); err == nil && mcmd == proto.RelayDBQuery {
		if q, err := proto.ParseDBQuery(msg); err == nil && !q.WantsDescriptor() {
			s.tc.mu.Lock()
			s.tc.asked = append(s.tc.asked, [2]uint64{uint64(q.Chunk), uint64(q.Chunk) + uint64(q.NbChunks)})
			s.tc.mu.Unlock()
		}
	}
	return s.CellStream.WriteCell(cmd, data)
}

func (s *countStream) ReadCell(buf []byte) (proto.RelayCommand, int, error) {
	cmd, n, err := s.CellStream.ReadCell(buf)
	if err == nil && cmd == proto.RelayDBData {
		s.tc.mu.Lock()
		s.tc.dataSeen[s.id]++
		s.tc.mu.Unlock()
	}
	return cmd, n, err
}

// runGet runs a Get to completion (or ctx's end) into a fresh store and
// returns the bytes delivered in order, the store and the Get.
func runGet(t *testing.T, ctx context.Context, tc *testCircuits, st *chunkstore.Store, ids []window.CircuitID, mod func(*GetConfig)) ([]byte, *Get, error) {
	t.Helper()
	var out bytes.Buffer
	next := uint64(0)
	cfg := GetConfig{Name: tc.net.name, Store: st, Circuits: tc, Initial: ids,
		Deliver: func(chunk uint64, data []byte) error {
			if chunk != next {
				return fmt.Errorf("delivered chunk %d, want %d", chunk, next)
			}
			next += uint64((len(data) + proto.ChunkSize - 1) / proto.ChunkSize)
			out.Write(data)
			return nil
		}}
	if mod != nil {
		mod(&cfg)
	}
	g, err := NewGet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = g.Run(ctx)
	return out.Bytes(), g, err
}

func getCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Six 3-hop circuits to two ORDBs: five download, and the bytes delivered
// and stored are the content's.
func TestGetFiveCircuits(t *testing.T) {
	net := newGetNet(t, 498*3000+77, 4, 2)
	tc := newTestCircuits(t, net)
	defer tc.closeAll()
	st := openStore(t, "cache.db")
	var last GetProgress
	ids := tc.initial(6)
	t0 := time.Now()
	got, g, err := runGet(t, getCtx(t), tc, st, ids, func(c *GetConfig) {
		c.Progress = func(p GetProgress) { last = p }
	})
	wall := time.Since(t0).Seconds()
	if err != nil {
		t.Fatal(err)
	}
	// The finished Get's efficiency: its chunks over its time over the
	// circuits' measured rates, the time from Run to the last chunk (no
	// more than the test saw), at most 1.
	if eff, cap := g.Efficiency(), g.w.Capacity(); cap <= 0 || eff < min(3001/wall/cap, 1) || eff > 1 {
		t.Errorf("efficiency %.3f, capacity %.0f chunks/s, %d chunks in %.3f s", eff, cap, g.Stats().Received, wall)
	}
	if !bytes.Equal(got, net.data) {
		t.Fatalf("delivered %d bytes, differing from the content's %d", len(got), len(net.data))
	}
	if !bytes.Equal(readAll(t, st, net.name), net.data) {
		t.Fatal("stored content differs")
	}
	tc.mu.Lock()
	used := len(tc.dataSeen)
	tc.mu.Unlock()
	if used < 5 {
		t.Errorf("data came over %d circuits, want 5", used)
	}
	if last.Held != last.Total || last.Total != 3001 || len(last.Circuits) < 5 {
		t.Errorf("last progress %+v", last)
	}
	// A loaded machine may see a circuit stall and replace it; without
	// that, no chunk may come twice.
	if s := g.Stats(); s.Received != 3001 || (s.Replaced == 0 && s.Dups != 0) {
		t.Errorf("stats %+v", s)
	}
}

// A circuit destroyed mid-download is replaced and the download completes
// with nothing lost.
func TestGetCircuitDies(t *testing.T) {
	net := newGetNet(t, 498*4000, 4, 1)
	tc := newTestCircuits(t, net)
	defer tc.closeAll()
	// The victim is circuit 0 or 1, whichever carries data first: from
	// that cell on its streams read nothing more (the cells already
	// queued at our end would otherwise still come in, and on a loaded
	// machine finish the download before the destruction was noticed),
	// and the circuit is destroyed.
	var once sync.Once
	victim := -1
	tc.wrap = func(k int, s CellStream) CellStream {
		if k != 0 && k != 1 {
			return s
		}
		return &dieStream{CellStream: s, dead: func(cmd proto.RelayCommand, n int) bool {
			if cmd == proto.RelayDBData && n > 20 {
				once.Do(func() {
					tc.mu.Lock()
					defer tc.mu.Unlock()
					victim = k
					for id, o := range tc.order {
						if c := tc.circs[id]; o == k && c != nil {
							go c.Close()
						}
					}
				})
			}
			tc.mu.Lock()
			defer tc.mu.Unlock()
			return victim == k
		}}
	}
	ids := tc.initial(6)
	st := openStore(t, "cache.db")
	got, _, err := runGet(t, getCtx(t), tc, st, ids, func(c *GetConfig) {
		// No circuit is judged stalled within the test: on a loaded
		// machine the silent victim was, 200 ms after its last cell,
		// before its reader goroutine got the CPU to report the failure.
		c.Window = window.DefaultConfig(net.name)
		c.Window.StallMin = time.Minute
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, net.data) || !bytes.Equal(readAll(t, st, net.name), net.data) {
		t.Fatal("content differs")
	}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if !slices.Contains(tc.replaced, window.WhyFailed) {
		t.Fatalf("replaced %v, want the dead circuit replaced as failed", tc.replaced)
	}
}

// dieStream fails every read from the cell for which dead (given the
// cell's command and count) says the circuit is dead.
type dieStream struct {
	CellStream
	n    int
	dead func(cmd proto.RelayCommand, n int) bool
}

func (s *dieStream) ReadCell(buf []byte) (proto.RelayCommand, int, error) {
	cmd, n, err := s.CellStream.ReadCell(buf)
	if err == nil {
		s.n++
		if s.dead(cmd, s.n) {
			return 0, 0, circuits.ErrCircuitClosed
		}
	}
	return cmd, n, err
}

// tapStream calls onRead with every cell read (after counting n of them)
// and may change the cell's data through mutate.
type tapStream struct {
	CellStream
	n      int
	onRead func(cmd proto.RelayCommand, data []byte, n int)
}

func (s *tapStream) ReadCell(buf []byte) (proto.RelayCommand, int, error) {
	cmd, n, err := s.CellStream.ReadCell(buf)
	if err == nil {
		s.n++
		s.onRead(cmd, buf[:n], s.n)
	}
	return cmd, n, err
}

// A circuit whose ORDB corrupts DB_DATA is blamed (replaced as bad data),
// nothing it sent is stored, and its chunks are fetched elsewhere.
func TestGetCorruptORDB(t *testing.T) {
	net := newGetNet(t, 498*3000, 4, 2)
	tc := newTestCircuits(t, net)
	defer tc.closeAll()
	// The liar is the first circuit whose stream reads a DB_DATA.
	var mu sync.Mutex
	liar, flipped := -1, 0
	tc.wrap = func(k int, s CellStream) CellStream {
		return &tapStream{CellStream: s, onRead: func(cmd proto.RelayCommand, data []byte, n int) {
			mu.Lock()
			defer mu.Unlock()
			if liar < 0 && cmd == proto.RelayDBData {
				liar = k
			}
			if k == liar && cmd == proto.RelayDBData && len(data) > 100 {
				data[len(data)-3] ^= 0x40 // chunk bytes, past any header
				flipped++
			}
		}}
	}
	ids := tc.initial(5)
	st := openStore(t, "cache.db")
	got, g, err := runGet(t, getCtx(t), tc, st, ids, nil)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if flipped == 0 {
		t.Fatal("the corrupting circuit carried no data")
	}
	if !bytes.Equal(got, net.data) || !bytes.Equal(readAll(t, st, net.name), net.data) {
		t.Fatal("content differs")
	}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	// Only the liar is blamed for bad data (a loaded machine may see a
	// stall too, on the real clock).
	bad := 0
	for _, why := range tc.replaced {
		if why == window.WhyBadData {
			bad++
		}
	}
	if bad != 1 || g.Stats().Replaced != len(tc.replaced) {
		t.Fatalf("replaced %v (stats %+v), want the corrupting circuit replaced for bad data", tc.replaced, g.Stats())
	}
}

// A Get cancelled halfway resumes without asking a chunk it holds.
func TestGetResumeAfterCancel(t *testing.T) {
	net := newGetNet(t, 498*6000, 3, 1)
	tc := newTestCircuits(t, net)
	defer tc.closeAll()
	st := openStore(t, "cache.db")
	ctx, cancel := context.WithCancel(getCtx(t))
	// The user gives up a third of the way: once 2,000 cells came (a
	// cell carries at most a chunk), and no cell passes after. (Cancelling at the 2,000th chunk
	// delivered is not a third of the way: the window asks far ahead of
	// delivery, and a loaded machine had all 6,000 chunks stored by then.)
	var cells atomic.Int64
	tc.wrap = func(_ int, s CellStream) CellStream {
		return &gateStream{CellStream: s, ctx: ctx, onCell: func() {
			if cells.Add(1) == 2000 {
				cancel()
			}
		}}
	}
	_, g1, err := runGet(t, ctx, tc, st, tc.initial(5), nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("first run: %v, want context.Canceled", err)
	}
	if eff := g1.Efficiency(); eff != 0 {
		t.Errorf("a cancelled Get's efficiency %v, want 0 (it did not finish)", eff)
	}
	if err := st.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	have, err := st.Have(net.name)
	if err != nil {
		t.Fatal(err)
	}
	total := uint64(6000)
	held := countHeld(have, total)
	if held == 0 || held == total {
		t.Fatalf("%d of %d chunks held after the cancel", held, total)
	}
	tc.mu.Lock()
	tc.asked, tc.wrap = nil, nil
	tc.mu.Unlock()
	var first GetProgress
	got, _, err := runGet(t, getCtx(t), tc, st, tc.initial(5), func(c *GetConfig) {
		c.Progress = func(p GetProgress) {
			if first.Total == 0 {
				first = p
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, net.data) {
		t.Fatal("content differs")
	}
	if first.Resumed != held {
		t.Errorf("resumed %d, want %d", first.Resumed, held)
	}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	// Distinct chunks: a GET of a circuit replaced as stalled (a loaded
	// machine) is asked again, which is right.
	asked := map[uint64]bool{}
	for _, r := range tc.asked {
		for i := r[0]; i < r[1]; i++ {
			asked[i] = true
			if i/64 < uint64(len(have)) && have[i/64]&(1<<(i%64)) != 0 {
				t.Fatalf("chunk %d asked again though held", i)
			}
		}
	}
	if uint64(len(asked)) != total-held {
		t.Errorf("second run asked %d distinct chunks, want the %d missing", len(asked), total-held)
	}
}

// gateStream calls onCell for each cell read and passes none once ctx
// ended.
type gateStream struct {
	CellStream
	ctx    context.Context
	onCell func()
}

func (s *gateStream) ReadCell(buf []byte) (proto.RelayCommand, int, error) {
	cmd, n, err := s.CellStream.ReadCell(buf)
	if err == nil {
		s.onCell()
	}
	if cerr := s.ctx.Err(); cerr != nil {
		return 0, 0, cerr
	}
	return cmd, n, err
}

// A seek before the download delivers the chunk sought first, then the
// rest of the content from there, then what the seek skipped.
func TestGetSeek(t *testing.T) {
	net := newGetNet(t, 498*3000, 3, 1)
	tc := newTestCircuits(t, net)
	defer tc.closeAll()
	st := openStore(t, "cache.db")
	const seek = 2000
	var order []uint64
	out := make([]byte, len(net.data))
	cfg := GetConfig{Name: net.name, Store: st, Circuits: tc, Initial: tc.initial(5),
		Deliver: func(chunk uint64, data []byte) error {
			order = append(order, chunk)
			copy(out[chunk*proto.ChunkSize:], data)
			return nil
		}}
	g, err := NewGet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.Seek(seek)
	if _, err := g.Run(getCtx(t)); err != nil {
		t.Fatal(err)
	}
	if len(order) == 0 || order[0] != seek {
		t.Fatalf("first delivery at chunk %v, want %d", order, seek)
	}
	if !bytes.Equal(out, net.data) {
		t.Fatal("content differs")
	}
}

// A seek while the download runs: the GETs cancelled by it restart their
// circuits' streams (Get.restart), the sought chunk is delivered before
// the chunks between the old position and it, and the content still
// comes whole and right.
func TestGetSeekWhileRunning(t *testing.T) {
	net := newGetNet(t, 498*8000, 3, 1)
	tc := newTestCircuits(t, net)
	defer tc.closeAll()
	st := openStore(t, "cache.db")
	const seek = 6000
	var mu sync.Mutex
	opened := 0
	tc.wrap = func(_ int, s CellStream) CellStream {
		mu.Lock()
		opened++
		mu.Unlock()
		return s
	}
	var order []uint64
	out := make([]byte, len(net.data))
	var g *Get
	// The window stays below the seek until the seek is handled: the
	// queries written from the first delivery (when the seek is asked)
	// to its handling are then never mistaken for the seek's. (With the
	// default 16 MiB window, a loaded machine whose first chunk came
	// late had asked chunk 7744 before the seek was handled.)
	wc := window.DefaultConfig(net.name)
	wc.MaxWindow = 2500
	cfg := GetConfig{Name: net.name, Store: st, Circuits: tc, Initial: tc.initial(5), Window: wc,
		Deliver: func(chunk uint64, data []byte) error {
			if len(order) == 0 {
				g.Seek(seek) // on Run's goroutine: handled at its next event
			}
			order = append(order, chunk)
			copy(out[chunk*proto.ChunkSize:], data)
			return nil
		}}
	g, err := NewGet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Run(getCtx(t)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, net.data) {
		t.Fatal("content differs")
	}
	mu.Lock()
	if opened <= 5 {
		t.Errorf("%d streams opened on 5 circuits: the seek restarted none", opened)
	}
	mu.Unlock()
	at := slices.Index(order, seek)
	if at < 0 {
		t.Fatalf("no delivery starts at the sought chunk %d: %v", seek, order)
	}
	for _, c := range order[:at] {
		if c >= 3000 && c < seek {
			t.Fatalf("chunk %d delivered before the sought %d (order %v)", c, seek, order[:at+1])
		}
	}
}

// A seek's new GETs go out on the streams its restarts open, never on the
// old streams it closes (their relays would forward them, and the
// provider serve them, for nothing, ahead of the seek's answers).
func TestGetSeekSendsOnFreshStreams(t *testing.T) {
	net := newGetNet(t, 498*8000, 3, 1)
	tc := newTestCircuits(t, net)
	defer tc.closeAll()
	st := openStore(t, "cache.db")
	const seek = 6000
	var mu sync.Mutex
	var streams []*queryLog
	seeked := false // guarded by mu
	tc.wrap = func(k int, s CellStream) CellStream {
		mu.Lock()
		l := &queryLog{CellStream: s, mu: &mu, old: !seeked, seeked: &seeked, circuit: k}
		streams = append(streams, l)
		mu.Unlock()
		return l
	}
	var g *Get
	// The window stays below the seek until the seek is handled: the
	// queries written from the first delivery (when the seek is asked)
	// to its handling are then never mistaken for the seek's. (With the
	// default 16 MiB window, a loaded machine whose first chunk came
	// late had asked chunk 7744 before the seek was handled.)
	wc := window.DefaultConfig(net.name)
	wc.MaxWindow = 2500
	cfg := GetConfig{Name: net.name, Store: st, Circuits: tc, Initial: tc.initial(5), Window: wc,
		Deliver: func(chunk uint64, data []byte) error {
			mu.Lock()
			first := !seeked
			seeked = true
			mu.Unlock()
			if first {
				g.Seek(seek)
			}
			return nil
		}}
	g, err := NewGet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Run(getCtx(t)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	tc.mu.Lock()
	gone := maps.Clone(tc.gone)
	tc.mu.Unlock()
	dropped, spares := 0, 0
	for _, l := range streams {
		if l.old && l.before == 0 && len(l.after) > 0 {
			spares++ // opened before the seek, used after it
		}
		if !l.old || l.before == 0 || !l.closed || l.ended {
			continue // not in use when the seek came (a spare, or opened after), or ended cleanly at the download's end
		}
		if gone[l.circuit] {
			// Closed with its circuit, replaced (a loaded machine: slow
			// or stalled) maybe long after it rightly took the seek's
			// GETs; whether the seek closed it first cannot be told.
			t.Logf("circuit %d was replaced: its stream's queries after the seek %v are not judged", l.circuit, l.after)
			continue
		}
		dropped++
		for _, c := range l.after {
			if c >= seek && c < seek+2000 {
				t.Errorf("a GET of chunk %d (the seek's) went on a stream the seek closed (queries after the seek %v)", c, l.after)
			}
		}
	}
	if dropped == 0 {
		t.Fatal("the seek restarted no stream")
	}
	if spares == 0 {
		t.Error("no restart took its circuit's spare stream (opened ahead)")
	}
}

// queryLog records the DB_QUERY chunks written on a stream once a seek
// was asked, and how it ended.
type queryLog struct {
	CellStream
	mu     *sync.Mutex // guards the fields below and *seeked
	old    bool        // opened before the seek was asked
	seeked *bool
	before int      // queries written before the seek was asked
	after  []uint64 // chunks of the queries written after it
	ended  bool     // DB_END sent
	closed bool
	// circuit is the order of the stream's circuit (testCircuits.order).
	circuit int
}

func (l *queryLog) WriteCell(cmd proto.RelayCommand, data []byte) error {
	switch cmd {
	case proto.RelayDBQuery:
		// A query fits one cell: read it back as the ORDB would.
		_, msg, err := newMsgConn(&oneCell{cmd: cmd, data: data}).recv()
		if err == nil {
			if q, err := proto.ParseDBQuery(msg); err == nil && !q.WantsDescriptor() {
				l.mu.Lock()
				if *l.seeked {
					l.after = append(l.after, uint64(q.Chunk))
				} else {
					l.before++
				}
				l.mu.Unlock()
			}
		}
	case proto.RelayDBEnd:
		l.mu.Lock()
		l.ended = true
		l.mu.Unlock()
	}
	return l.CellStream.WriteCell(cmd, data)
}

func (l *queryLog) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	return l.CellStream.Close()
}

// oneCell is a stream holding one cell.
type oneCell struct {
	cmd  proto.RelayCommand
	data []byte
	read bool
}

func (o *oneCell) ReadCell(buf []byte) (proto.RelayCommand, int, error) {
	if o.read {
		return 0, 0, io.EOF
	}
	o.read = true
	return o.cmd, copy(buf, o.data), nil
}
func (o *oneCell) WriteCell(proto.RelayCommand, []byte) error { return io.ErrClosedPipe }
func (o *oneCell) Close() error                               { return nil }
