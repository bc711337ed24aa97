package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net/http"
	"sync"
	"time"

	"veil/chunkstore"
	"veil/chunkstore/content"
	"veil/circuits"
	"veil/cmd/veil/internal/gateway"
	"veil/ordb"
	"veil/proto"
)

// The node's side of the streaming gateway (package gateway): one fetch
// per content shared by every request for it, started by the first, and
// steered by the requests' offsets (ordb.Get.Seek).

// gatewayLookupTimeout bounds the wait for a content's descriptor before
// the gateway answers 404 (tests shorten it).
var gatewayLookupTimeout = gateway.DefaultLookupTimeout

// streams are the fetches the gateway started, by content.
type streams struct {
	mu     sync.Mutex // guards m and closed
	m      map[proto.HashName]*streamFetch
	closed bool
	wg     sync.WaitGroup // the fetches' goroutines
}

// streamFetch is one shared fetch; done closes when it ended, err says
// how. users counts the requests using it (streams.mu guards users and
// idle): a live stream's fetch ends once none used it for liveIdle.
type streamFetch struct {
	done  chan struct{}
	err   error
	users int
	idle  time.Time
}

// liveIdle is how long a live stream's fetch runs with nobody reading.
var liveIdle = 30 * time.Second

// closeWait waits for the fetches to end (the node's context ended first).
func (s *streams) closeWait() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.wg.Wait()
}

// startStream returns the shared fetch of name, starting it if none
// runs. nil once the node is closing.
func (n *Node) startStream(name proto.HashName) *streamFetch {
	s := &n.streams
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	if f := s.m[name]; f != nil {
		return f
	}
	if s.m == nil {
		s.m = map[proto.HashName]*streamFetch{}
	}
	f := &streamFetch{done: make(chan struct{}), idle: time.Now()}
	s.m[name] = f
	s.wg.Add(2)
	ctx, cancel := context.WithCancel(n.ctx)
	go func() {
		// A live stream has no end: stop fetching it once unused.
		defer s.wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			d, err := n.cache.Descriptor(name)
			s.mu.Lock()
			unused := f.users == 0 && time.Since(f.idle) >= liveIdle
			s.mu.Unlock()
			if err == nil && d.Flags&proto.FlagLive != 0 && unused {
				n.log.Info("gateway: nobody reads the live stream any more", "hash_name", name.String())
				cancel()
				return
			}
		}
	}()
	go func() {
		defer s.wg.Done()
		defer cancel()
		_, f.err = n.Fetch(ctx, name, nil)
		if f.err != nil {
			n.log.Info("gateway fetch ended", "hash_name", name.String(), "err", f.err)
		}
		s.mu.Lock()
		delete(s.m, name)
		s.mu.Unlock()
		close(f.done)
	}()
	return f
}

// Stream starts (or joins) the fetch of name for the gateway and returns
// once its descriptor is known: see gateway.Source.
func (n *Node) Stream(ctx context.Context, name proto.HashName) (gateway.Content, error) {
	if n.served != nil {
		if d, err := n.served.Descriptor(name); err == nil {
			return &storeContent{n: n, s: n.served, name: name, d: d}, nil
		}
	}
	if d, ok := complete(n.cache, name); ok {
		return &storeContent{n: n, s: n.cache, name: name, d: d}, nil
	}
	f := n.startStream(name)
	if f == nil {
		return nil, ErrClosed
	}
	n.streams.use(f, 1)
	for {
		changed := n.cache.Changed() // taken before looking: no change is missed
		if d, err := n.cache.Descriptor(name); err == nil {
			return &storeContent{n: n, s: n.cache, name: name, d: d, fetch: f}, nil
		}
		select {
		case <-f.done:
			err := f.err // written before done closed
			if err == nil {
				if d, derr := n.cache.Descriptor(name); derr == nil { // complete
					return &storeContent{n: n, s: n.cache, name: name, d: d, fetch: f}, nil
				}
				err = fmt.Errorf("node: the fetch of %v ended without its descriptor", name)
			}
			n.streams.use(f, -1)
			if errors.Is(err, ErrNotFound) {
				return nil, gateway.ErrNotFound
			}
			return nil, err
		case <-ctx.Done():
			n.streams.use(f, -1)
			return nil, ctx.Err()
		case <-changed:
		}
	}
}

// use counts a user of f in (delta 1) or out (-1).
func (s *streams) use(f *streamFetch, delta int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f.users += delta
	if f.users == 0 {
		f.idle = time.Now()
	}
}

// ErrClosed: the node is stopping.
var ErrClosed = errors.New("node: closed")

// gatewaySource adapts Node to gateway.Source.
type gatewaySource struct{ n *Node }

func (g gatewaySource) Content(ctx context.Context, name proto.HashName) (gateway.Content, error) {
	return g.n.Stream(ctx, name)
}

// storeContent is a content in one of the node's stores.
type storeContent struct {
	n        *Node
	s        *chunkstore.Store
	name     proto.HashName
	d        proto.DBConnected
	fetch    *streamFetch // the gateway's fetch, nil if the node held it
	released sync.Once
}

// Close says the request that used c ended.
func (c *storeContent) Close() {
	if c.fetch != nil {
		c.released.Do(func() { c.n.streams.use(c.fetch, -1) })
	}
}

func (c *storeContent) Size() int64 {
	if c.d.Flags&proto.FlagLive != 0 {
		return -1
	}
	return int64(c.d.Size)
}

func (c *storeContent) MIME() string { return c.d.Type }

func (c *storeContent) Want(off int64) {
	if c.fetch != nil && off >= 0 {
		c.n.seekFetch(c.name, uint64(off)/proto.ChunkSize)
	}
}

func (c *storeContent) NewReader(ctx context.Context) (io.ReadSeeker, error) {
	if c.fetch != nil {
		// Nothing comes once the fetch ended: a Read waiting for a
		// chunk then fails rather than waits for the request's end.
		fctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-c.fetch.done:
				cancel()
			case <-fctx.Done():
			}
		}()
		ctx = fctx
	}
	r, err := c.s.NewReader(ctx, c.name)
	if err != nil {
		return nil, err
	}
	if c.Size() < 0 {
		start, err := c.liveStart(ctx)
		if err != nil {
			return nil, err
		}
		if _, err := r.Seek(int64(start)*proto.ChunkSize, io.SeekStart); err != nil {
			return nil, err
		}
		return &liveReader{Reader: r, c: c}, nil
	}
	return r, nil
}

// liveReader reads a live stream; when the store has dropped the chunks
// at its position (the reader fell more than the kept windows behind),
// it jumps to the oldest chunk held: a live player prefers a gap to the
// end of its stream.
type liveReader struct {
	*chunkstore.Reader
	c *storeContent
}

func (l *liveReader) Read(p []byte) (int, error) {
	for {
		n, err := l.Reader.Read(p)
		if !errors.Is(err, chunkstore.ErrEvicted) {
			return n, err
		}
		// Jump to the oldest chunk held at or past what the store keeps
		// (records below it may linger until the next commit drops
		// them: jumping there would fail again), or to that floor.
		floor, ferr := l.c.s.LiveFloor(l.c.name)
		have, herr := l.c.s.Have(l.c.name)
		if ferr != nil || herr != nil {
			return n, err
		}
		from, _ := l.Reader.Seek(0, io.SeekCurrent)
		to := max(floor, uint64(from)/proto.ChunkSize+1)
		for i := to; i/64 < uint64(len(have)); i++ {
			if have[i/64]&(1<<(i%64)) != 0 {
				to = i
				break
			}
		}
		l.c.n.log.Info("gateway: a live reader fell behind what the store keeps; skipping ahead", "hash_name", l.c.name.String(), "from_chunk", from/proto.ChunkSize, "to_chunk", to)
		if _, serr := l.Reader.Seek(int64(to)*proto.ChunkSize, io.SeekStart); serr != nil {
			return n, serr
		}
		if n > 0 {
			return n, nil
		}
	}
}

// liveStart is the chunk a live stream's reader starts at: where the
// node's fetch started (the ORDB's DB_LIVE_START; waited for), or two
// windows behind the newest chunk for a stream the node publishes, as
// an ORDB would say.
func (c *storeContent) liveStart(ctx context.Context) (uint64, error) {
	if c.fetch == nil {
		h, err := c.s.Head(c.name)
		if err != nil {
			return 0, err
		}
		const back = 2 * 500_000 / proto.ChunkSize
		return h.Length - min(h.Length, back), nil
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		c.n.mu.Lock()
		tr := c.n.transfers[c.name]
		c.n.mu.Unlock()
		if tr != nil {
			tr.mu.Lock()
			start, ok := tr.liveStart, tr.live
			tr.mu.Unlock()
			if ok {
				return start, nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-c.fetch.done:
			return 0, fmt.Errorf("node: the fetch of live stream %v ended: %v", c.name, c.fetch.err)
		case <-t.C:
		}
	}
}

// setLive records where a live stream's reading started.
func (t *transfer) setLive(start uint64) {
	t.mu.Lock()
	t.liveStart, t.live = start, true
	t.mu.Unlock()
}

// seekFetch moves the running fetch of name to chunk.
func (n *Node) seekFetch(name proto.HashName, chunk uint64) {
	n.mu.Lock()
	t := n.transfers[name]
	n.mu.Unlock()
	if t != nil {
		t.seekTo(chunk)
	}
}

// seekTo asks the transfer's download to go to chunk, now or when its
// next attempt starts.
func (t *transfer) seekTo(chunk uint64) {
	t.mu.Lock()
	t.seek, t.hasSeek = chunk, true
	g := t.get
	t.mu.Unlock()
	if g != nil {
		g.Seek(chunk)
	}
}

// attach makes g the transfer's running download (nil: none), giving it
// the last seek asked.
func (t *transfer) attach(g *ordb.Get) {
	t.mu.Lock()
	t.get = g
	chunk, ok := t.seek, t.hasSeek
	t.mu.Unlock()
	if g != nil && ok {
		g.Seek(chunk)
	}
}

// StreamEvent is one line of /api/v1/stream's answer: the content URL
// for a player, and how far the download is ahead of the play position.
type StreamEvent struct {
	URL  string `json:"url"`
	Size int64  `json:"size"` // -1: a live stream
	MIME string `json:"mime"`
	// Held and Total count chunks (Total 0 for a live stream; Held is then
	// the newest chunk's index + 1).
	Held  uint64 `json:"chunks_held"`
	Total uint64 `json:"chunks_total"`
	// Position is the next byte the gateway serves to the player reading
	// the content (-1 before any request); Ahead the verified bytes held
	// from there without a gap: what the player can read without waiting.
	Position int64  `json:"position"`
	Ahead    int64  `json:"ahead_bytes"`
	Readers  int    `json:"readers"`
	Done     bool   `json:"done,omitempty"` // every chunk is held
	Error    string `json:"error,omitempty"`
	NotFound bool   `json:"not_found,omitempty"`
}

// streamEvery is how often /api/v1/stream reports.
const streamEvery = 250 * time.Millisecond

// serveStream starts the gateway's fetch of a content and reports its
// buffering until the client leaves (a static content's report ends
// with Done once every chunk is held).
func (a *apiServer) serveStream(n *Node, w http.ResponseWriter, r *http.Request) {
	name, ok := hashArg(w, r)
	if !ok {
		return
	}
	ctx, cancel := n.requestContext(r)
	defer cancel()
	lctx, lcancel := context.WithTimeout(ctx, gatewayLookupTimeout)
	c, err := n.Stream(lctx, name)
	lcancel()
	if err != nil {
		code := http.StatusBadGateway
		if errors.Is(err, gateway.ErrNotFound) || errors.Is(err, context.DeadlineExceeded) {
			code = http.StatusNotFound
		}
		writeError(w, code, fmt.Errorf("no provider found for %v within %v: %w", name, gatewayLookupTimeout, err))
		return
	}
	defer c.Close()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	rc := http.NewResponseController(w)
	sc := c.(*storeContent)
	tick := time.NewTicker(streamEvery)
	defer tick.Stop()
	for {
		ev := a.streamEvent(sc)
		if enc.Encode(ev) != nil || rc.Flush() != nil || ev.Done {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// streamEvent reports a content's buffering.
func (a *apiServer) streamEvent(c *storeContent) StreamEvent {
	ev := StreamEvent{URL: gateway.URL(a.addr, a.cookie, c.name), Size: c.Size(), MIME: c.d.Type, Position: -1}
	pos, seen := a.gw.Position(c.name)
	if seen {
		ev.Position, ev.Readers = pos.Offset, pos.Readers
	}
	if c.Size() < 0 {
		if h, err := c.s.Head(c.name); err == nil {
			ev.Held = h.Length
			if seen {
				ev.Ahead = max(0, int64(h.Length)*proto.ChunkSize-pos.Offset)
			}
		}
		return ev
	}
	ev.Total = content.ChunkCount(c.d.Size)
	have, err := c.s.Have(c.name)
	if err != nil {
		ev.Error = err.Error()
		return ev
	}
	ev.Held = countBits(have, ev.Total)
	ev.Done = ev.Held == ev.Total
	from := uint64(max(ev.Position, 0)) / proto.ChunkSize
	run := uint64(0)
	for i := from; i < ev.Total && i/64 < uint64(len(have)) && have[i/64]&(1<<(i%64)) != 0; i++ {
		run++
	}
	if run > 0 {
		ev.Ahead = min(int64(from+run)*proto.ChunkSize, c.Size()) - max(ev.Position, 0)
	}
	return ev
}

// countBits counts the set bits of a have-bitmap below total.
func countBits(have []uint64, total uint64) uint64 {
	n := uint64(0)
	for w, word := range have {
		if uint64(w)*64 >= total {
			break
		}
		if rest := total - uint64(w)*64; rest < 64 {
			word &= 1<<rest - 1
		}
		n += uint64(bits.OnesCount64(word))
	}
	return n
}

// rateLimit caps the bytes the node's fetches read (fetchLimit): tests
// use it to watch a download while it is still running.
type rateLimit struct {
	mu sync.Mutex // guards b
	b  *circuits.TokenBucket
}

func newRateLimit(bytesPerSec int) *rateLimit {
	return &rateLimit{b: circuits.NewTokenBucket(bytesPerSec, 16*proto.CellSize, time.Now())}
}

// limitedStream is an ORDB stream whose reads take from a rateLimit.
type limitedStream struct {
	ordb.CellStream
	l *rateLimit
}

func (s limitedStream) ReadCell(buf []byte) (proto.RelayCommand, int, error) {
	cmd, n, err := s.CellStream.ReadCell(buf)
	if err == nil {
		s.l.mu.Lock()
		d := s.l.b.Take(proto.CellSize, time.Now())
		s.l.mu.Unlock()
		if d > 0 {
			time.Sleep(d) // the limit itself, not a wait for a condition
		}
	}
	return cmd, n, err
}
