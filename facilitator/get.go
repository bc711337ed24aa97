package facilitator

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"veil/proto"
)

// GetConfig is a requester's fetch of a torrent through its own circuits
// to its ORDBs, which ask a facilitator.
type GetConfig struct {
	// Target names the torrent (ParseTarget): its infohash, and the BEP 53
	// file selection if the magnet link had one (the first selected file
	// is fetched when File and FileIndex choose none).
	Target Magnet
	// File chooses one file of a multi-file torrent by its
	// slash-separated path; with UseIndex, FileIndex chooses it by its
	// index instead. Neither (and no selection in Target): the whole
	// torrent, its files concatenated.
	File      string
	UseIndex  bool
	FileIndex int
	// Open opens a stream to an ORDB at the end of one of the
	// requester's circuits (ordb.ORDBDest). Get calls it once per worker,
	// and again on another circuit after a failure.
	Open func(ctx context.Context, worker int) (Stream, error)
	// Workers is how many streams fetch at once. 0: 4.
	Workers int
	// SegmentBytes is about how much one query asks for (whole pieces).
	// 0: 8 MiB.
	SegmentBytes int64
	// MetadataTimeout bounds waiting for the descriptor (the facilitator
	// may have to fetch the metadata from the swarm first). 0: 90 s.
	MetadataTimeout time.Duration
	// SegmentTimeout bounds one segment's answer. 0: 3 min.
	SegmentTimeout time.Duration
	// Progress, if set, is called with bytes written so far and the
	// total to write.
	Progress func(done, total int64)
}

// GetResult says what Get wrote.
type GetResult struct {
	Info *Info
	// Offset and Length are the written range of the torrent's
	// concatenated files; File is the file chosen, if one was.
	Offset, Length int64
	File           *File
}

// Errors of Get.
var (
	// ErrMetadataTimeout: no descriptor came in time.
	ErrMetadataTimeout = errors.New("facilitator: timed out waiting for the torrent's metadata (no facilitator reached a peer that has it)")
	// ErrTorrentUnavailable: the ORDBs answered DB_END: no facilitator
	// could get the torrent.
	ErrTorrentUnavailable = errors.New("facilitator: torrent unavailable through the ORDBs (no facilitator could get it)")
	// ErrNotTorrent: the descriptor is not a torrent's.
	ErrNotTorrent = errors.New("facilitator: the answer is not a torrent descriptor")
)

// Get fetches a torrent (or one file of it) through cfg.Open's streams and
// writes it to w in order. It checks the info dictionary against the
// infohash (VerifyInfo) and every piece against its SHA-1 before writing
// a byte of it, so a facilitator or an ORDB that changed the data is
// caught (ErrInfoHashMismatch, ErrPieceHash). Nothing is written past a
// piece that failed.
func Get(ctx context.Context, cfg GetConfig, w io.Writer) (GetResult, error) {
	if cfg.Open == nil {
		return GetResult{}, errors.New("facilitator: GetConfig.Open is nil")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.SegmentBytes <= 0 {
		cfg.SegmentBytes = 8 << 20
	}
	if cfg.MetadataTimeout <= 0 {
		cfg.MetadataTimeout = 90 * time.Second
	}
	if cfg.SegmentTimeout <= 0 {
		cfg.SegmentTimeout = 3 * time.Minute
	}
	ih := cfg.Target.InfoHash
	info, err := getInfo(ctx, cfg)
	if err != nil {
		return GetResult{}, err
	}
	res := GetResult{Info: info, Length: info.TotalLength()}
	var f File
	switch {
	case cfg.File != "":
		f, err = info.FileByPath(cfg.File)
	case cfg.UseIndex:
		f, err = info.FileByIndex(cfg.FileIndex)
	case len(cfg.Target.Select) > 0:
		f, err = info.FileByIndex(cfg.Target.Select[0])
	default:
		f.Index = -1
	}
	if err != nil {
		return res, err
	}
	if f.Index >= 0 {
		res.File, res.Offset, res.Length = &f, f.Offset, f.Length
	}
	if res.Length == 0 {
		return res, nil
	}
	first, end, err := info.PieceRange(res.Offset, res.Length)
	if err != nil {
		return res, err
	}
	per := max(1, int(cfg.SegmentBytes/info.PieceLength()))
	// A query asks for at most 65535 chunks.
	per = min(per, int(int64(0xffff)*proto.ChunkSize/info.PieceLength()))
	if per < 1 {
		return res, fmt.Errorf("facilitator: pieces of %d bytes do not fit one query", info.PieceLength())
	}
	g := &getter{cfg: cfg, ih: ih, info: info, w: w, lo: res.Offset, hi: res.Offset + res.Length}
	for p := first; p < end; p += per {
		g.segs = append(g.segs, [2]int{p, min(p+per, end)})
	}
	return res, g.run(ctx)
}

// newRequestID picks a random request ID.
func newRequestID() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:])
}

// getInfo asks for the descriptor on one worker's stream after another
// until one answers with an info dictionary that hashes to the infohash.
func getInfo(ctx context.Context, cfg GetConfig) (*Info, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.MetadataTimeout)
	defer cancel()
	var lastErr error
	for w := 0; w < cfg.Workers; w++ {
		info, err := askInfo(ctx, cfg, w)
		if err == nil {
			return info, nil
		}
		lastErr = err
		if errors.Is(err, ErrInfoHashMismatch) || ctx.Err() != nil {
			break
		}
	}
	if ctx.Err() != nil && !errors.Is(lastErr, ErrInfoHashMismatch) {
		return nil, fmt.Errorf("%w: %v after %v", ErrMetadataTimeout, cfg.Target.InfoHash, cfg.MetadataTimeout)
	}
	return nil, lastErr
}

func askInfo(ctx context.Context, cfg GetConfig, worker int) (*Info, error) {
	st, err := cfg.Open(ctx, worker)
	if err != nil {
		return nil, fmt.Errorf("facilitator: opening a stream to an ORDB: %w", err)
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.Close() })
	defer stop()
	mc := newMsgConn(st)
	if err := mc.send(proto.DBQuery{HashName: proto.HashName(cfg.Target.InfoHash), RequestID: newRequestID()}); err != nil {
		return nil, err
	}
	m, err := mc.recv()
	if err != nil {
		return nil, fmt.Errorf("facilitator: waiting for the descriptor: %w", err)
	}
	switch m := m.(type) {
	case proto.DBEnd:
		return nil, fmt.Errorf("%w: %v (DB_END %v before the metadata: no facilitator reachable, or none found peers with the torrent's metadata within its timeout)", ErrTorrentUnavailable, cfg.Target.InfoHash, m.Reason)
	case proto.DBConnected:
		if !m.IsTorrent() {
			return nil, ErrNotTorrent
		}
		info, err := VerifyInfo(cfg.Target.InfoHash, m.Info)
		if err != nil {
			return nil, fmt.Errorf("checking the descriptor of %v: %w", cfg.Target.InfoHash, err)
		}
		if m.Size != uint64(info.TotalLength()) {
			return nil, fmt.Errorf("%w: descriptor size %d, info dictionary %d", ErrProtocol, m.Size, info.TotalLength())
		}
		return info, nil
	default:
		return nil, fmt.Errorf("%w: %v instead of a descriptor", ErrProtocol, m.Command())
	}
}

// getter runs the workers of one Get: each takes the next segment, asks
// for its chunks, checks its pieces and hands it to the writer, which
// writes segments in order. Workers run at most Workers+1 segments ahead
// of the writer, which bounds memory.
type getter struct {
	cfg    GetConfig
	ih     InfoHash
	info   *Info
	w      io.Writer
	lo, hi int64 // bytes to write
	segs   [][2]int

	mu      sync.Mutex
	cond    *sync.Cond
	nextSeg int            // the next segment to hand out
	written int            // segments written
	done    map[int][]byte // fetched, not yet written
	err     error
	nbytes  int64
}

func (g *getter) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g.cond = sync.NewCond(&g.mu)
	g.done = make(map[int][]byte)
	stop := context.AfterFunc(ctx, func() {
		g.mu.Lock()
		g.fail(ctx.Err())
		g.mu.Unlock()
	})
	defer stop()
	var wg sync.WaitGroup
	for w := range g.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.worker(ctx, w)
		}()
	}
	// The writer: segments in order.
	g.mu.Lock()
	for g.written < len(g.segs) && g.err == nil {
		b, ok := g.done[g.written]
		if !ok {
			g.cond.Wait()
			continue
		}
		delete(g.done, g.written)
		g.mu.Unlock()
		_, err := g.w.Write(b)
		g.mu.Lock()
		if err != nil {
			g.fail(fmt.Errorf("facilitator: writing: %w", err))
			break
		}
		g.written++
		g.nbytes += int64(len(b))
		if g.cfg.Progress != nil {
			g.cfg.Progress(g.nbytes, g.hi-g.lo)
		}
		g.cond.Broadcast()
	}
	err := g.err
	if err == nil && g.written < len(g.segs) {
		err = errors.New("facilitator: fetch stopped")
	}
	g.fail(errors.New("facilitator: done")) // stops the workers
	g.mu.Unlock()
	cancel()
	wg.Wait()
	return err
}

// fail records the first error and wakes everyone; g.mu held.
func (g *getter) fail(err error) {
	if g.err == nil {
		g.err = err
	}
	g.cond.Broadcast()
}

// take hands out the next segment, waiting while the workers are too far
// ahead of the writer; -1 when there is none or the fetch ended.
func (g *getter) take() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.err == nil && g.nextSeg < len(g.segs) && g.nextSeg > g.written+g.cfg.Workers {
		g.cond.Wait()
	}
	if g.err != nil || g.nextSeg >= len(g.segs) {
		return -1
	}
	g.nextSeg++
	return g.nextSeg - 1
}

// worker fetches segments on its stream; after a stream failure it opens
// another and retries the segment, up to a bound.
func (g *getter) worker(ctx context.Context, w int) {
	var st Stream
	var mc *msgConn
	defer func() {
		if st != nil {
			st.Close()
		}
	}()
	for {
		i := g.take()
		if i < 0 {
			return
		}
		var data []byte
		var err error
		for try := 0; try < 3; try++ {
			if st == nil {
				if st, err = g.cfg.Open(ctx, w); err != nil {
					st = nil
					continue
				}
				mc = newMsgConn(st)
			}
			data, err = g.segment(ctx, mc, st, i)
			if err == nil || errors.Is(err, ErrPieceHash) || errors.Is(err, ErrPieceLength) || ctx.Err() != nil {
				break
			}
			st.Close()
			st = nil
		}
		g.mu.Lock()
		if err != nil {
			g.fail(fmt.Errorf("segment %d of %v: %w", i, g.ih, err))
		} else {
			g.done[i] = data
			g.cond.Broadcast()
		}
		g.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// segment asks for the chunks covering segment i's pieces, checks every
// piece and returns the segment's bytes within [lo, hi).
func (g *getter) segment(ctx context.Context, mc *msgConn, st Stream, i int) ([]byte, error) {
	in := g.info
	first, end := g.segs[i][0], g.segs[i][1]
	pstart := int64(first) * in.PieceLength()
	pend := pstart
	for p := first; p < end; p++ {
		pend += in.PieceSize(p)
	}
	c0 := pstart / proto.ChunkSize
	c1 := (pend + proto.ChunkSize - 1) / proto.ChunkSize
	if c1-c0 > 0xffff || c1 > 1<<32 {
		return nil, fmt.Errorf("facilitator: segment of %d chunks does not fit one query", c1-c0)
	}
	tctx, cancel := context.WithTimeout(ctx, g.cfg.SegmentTimeout)
	defer cancel()
	stop := context.AfterFunc(tctx, func() { st.Close() })
	defer stop()
	q := proto.DBQuery{HashName: proto.HashName(g.ih), Chunk: uint32(c0), NbChunks: uint16(c1 - c0), RequestID: newRequestID()}
	if err := mc.send(q); err != nil {
		return nil, err
	}
	buf := make([]byte, 0, (c1-c0)*proto.ChunkSize)
	next := uint64(c0)
	for next < uint64(c1) {
		m, err := mc.recv()
		if err != nil {
			if tctx.Err() != nil && ctx.Err() == nil {
				return nil, fmt.Errorf("facilitator: no answer within %v", g.cfg.SegmentTimeout)
			}
			return nil, err
		}
		switch m := m.(type) {
		case proto.DBEnd:
			return nil, fmt.Errorf("%w: DB_END %v at chunk %d", ErrTorrentUnavailable, m.Reason, next)
		case proto.DBProof:
			if uint64(m.Chunk) != next {
				return nil, fmt.Errorf("%w: DB_PROOF for chunk %d, want %d", ErrProtocol, m.Chunk, next)
			}
		case proto.DBData:
			if uint64(m.Chunk) != next || next+uint64(m.NbChunks()) > uint64(c1) {
				return nil, fmt.Errorf("%w: DB_DATA for chunks %d+%d, want %d", ErrProtocol, m.Chunk, m.NbChunks(), next)
			}
			if len(m.Data)%proto.ChunkSize != 0 && int64(next)*proto.ChunkSize+int64(len(m.Data)) != in.TotalLength() {
				return nil, fmt.Errorf("%w: short chunk before the content's end", ErrProtocol)
			}
			buf = append(buf, m.Data...)
			next += uint64(m.NbChunks())
		default:
			return nil, fmt.Errorf("%w: %v in an answer", ErrProtocol, m.Command())
		}
	}
	// buf starts at byte c0*498; check each piece before keeping a byte.
	base := c0 * proto.ChunkSize
	if int64(len(buf)) < pend-base {
		return nil, fmt.Errorf("%w: %d bytes for a segment of %d", ErrPieceLength, len(buf), pend-base)
	}
	for p, off := first, pstart; p < end; p++ {
		n := in.PieceSize(p)
		if err := in.VerifyPiece(p, buf[off-base:off-base+n]); err != nil {
			return nil, err
		}
		off += n
	}
	lo, hi := max(pstart, g.lo), min(pend, g.hi)
	return buf[lo-base : hi-base], nil
}
