package facilitator

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"veil/proto"
)

// TorrentType is the MIME type a facilitator puts in a torrent's
// descriptor: the bytes are the torrent's files, concatenated.
const TorrentType = "application/octet-stream"

// ServerConfig configures a Server.
type ServerConfig struct {
	// Fetcher gets the torrents (a *Client).
	Fetcher Fetcher
	// Linger keeps a transfer open this long after its last query, so
	// that the next query of the same requester finds its metadata and
	// peers ready. 0: 30 s.
	Linger time.Duration
	// DataChunks is how many 498-byte chunks one DB_DATA carries. 0: 64.
	DataChunks int
	// Logger gets the server's events, never an infohash next to
	// anything that could name a requester (a facilitator never learns
	// one anyway: queries reach it through an ORDB's circuit). nil
	// discards them.
	Logger *slog.Logger
}

// Server is a facilitator's veil side: it answers DB_QUERY for torrents on
// the streams of circuits that ORDBs built to it (ServiceDest).
//
// The hash_name of a torrent is its v1 infohash. A query for the
// descriptor (chunk 0, nb 0) is answered with DB_CONNECTED in its torrent
// form, carrying the bencoded info dictionary; a query for chunks
// [c, c+n) is answered with DB_PROOF (empty: the requester checks piece
// hashes, not a Merkle proof) then DB_DATA runs, in order, covering bytes
// [498c, 498(c+n)) of the torrent's files concatenated. Anything the
// Fetcher cannot get ends with DB_END UNAVAILABLE (nothing sent yet) or
// DESTROYED (part of the answer out). Queries of one torrent are served one
// at a time, each from a single in-order Pieces sequence; the Server keeps
// no piece once written out.
//
// Safe for concurrent use; Serve runs in the caller's goroutine.
type Server struct {
	cfg    ServerConfig
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	mu   sync.Mutex // guards open
	open map[InfoHash]*served
}

// served is one torrent's transfer shared by the queries that need it.
type served struct {
	ih    InfoHash
	ready chan struct{} // closed once tr or err is set
	tr    Transfer
	err   error
	use   sync.Mutex // one Pieces sequence at a time
	refs  int        // queries holding it; guarded by Server.mu
	idle  *time.Timer
}

// NewServer makes a Server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Fetcher == nil {
		return nil, errors.New("facilitator: ServerConfig.Fetcher is nil")
	}
	if cfg.Linger == 0 {
		cfg.Linger = 30 * time.Second
	}
	if cfg.DataChunks == 0 {
		cfg.DataChunks = 64
	}
	if cfg.Linger < 0 || cfg.DataChunks < 1 || cfg.DataChunks > proto.MaxDBDataChunks {
		return nil, errors.New("facilitator: ServerConfig.Linger must not be negative and DataChunks must fit one DB_DATA")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{cfg: cfg, log: log, ctx: ctx, cancel: cancel, open: make(map[InfoHash]*served)}, nil
}

// Close ends every transfer; Serve calls in progress end with their
// streams' next write. Idempotent.
func (s *Server) Close() error {
	s.cancel()
	s.mu.Lock()
	open := s.open
	s.open = nil
	s.mu.Unlock()
	for _, sv := range open {
		<-sv.ready
		if sv.tr != nil {
			sv.tr.Close()
		}
	}
	return nil
}

// Serve answers the queries that arrive on st, one after the other, until
// st ends or breaks the protocol. It closes st.
func (s *Server) Serve(st Stream) {
	defer st.Close()
	mc := newMsgConn(st)
	mc.Asm.Max = proto.DBFirstFrameData // queries only
	for {
		m, err := mc.recv()
		if err != nil {
			return
		}
		q, ok := m.(proto.DBQuery)
		if !ok {
			return
		}
		if err := s.answer(mc, q); err != nil {
			return
		}
	}
}

// acquire returns the shared transfer of ih, opening it on first use.
func (s *Server) acquire(ih InfoHash) (*served, error) {
	s.mu.Lock()
	if s.open == nil {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	sv := s.open[ih]
	if sv != nil {
		sv.refs++
		if sv.idle != nil {
			sv.idle.Stop()
			sv.idle = nil
		}
		s.mu.Unlock()
		<-sv.ready
		if sv.err != nil {
			s.release(sv)
			return nil, sv.err
		}
		return sv, nil
	}
	sv = &served{ih: ih, ready: make(chan struct{}), refs: 1}
	s.open[ih] = sv
	s.mu.Unlock()
	sv.tr, sv.err = s.cfg.Fetcher.Open(s.ctx, ih, OpenOptions{})
	if sv.err != nil {
		s.mu.Lock()
		if s.open != nil && s.open[ih] == sv {
			delete(s.open, ih) // the next query tries again
		}
		sv.refs--
		s.mu.Unlock()
		close(sv.ready)
		return nil, sv.err
	}
	close(sv.ready)
	return sv, nil
}

// release gives sv back; the last one out closes it after Linger.
func (s *Server) release(sv *served) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sv.refs--; sv.refs > 0 || sv.tr == nil {
		return
	}
	sv.idle = time.AfterFunc(s.cfg.Linger, func() {
		s.mu.Lock()
		if sv.refs > 0 || s.open == nil || s.open[sv.ih] != sv {
			s.mu.Unlock()
			return
		}
		delete(s.open, sv.ih)
		s.mu.Unlock()
		sv.tr.Close()
	})
}

// answer serves one query. It returns an error only when st broke.
func (s *Server) answer(mc *msgConn, q proto.DBQuery) error {
	ih := InfoHash(q.HashName)
	unavailable := proto.DBEnd{Reason: proto.DBEndUnavailable}
	sv, err := s.acquire(ih)
	if err != nil {
		s.log.Info("facilitator: torrent unavailable", "err", err)
		return mc.send(unavailable)
	}
	defer s.release(sv)
	info := sv.tr.Info()
	if q.WantsDescriptor() {
		if len(info.Bytes()) > proto.MaxTorrentInfo {
			s.log.Info("facilitator: info dictionary too large for a descriptor", "bytes", len(info.Bytes()))
			return mc.send(unavailable)
		}
		return mc.send(proto.DBConnected{Size: uint64(info.TotalLength()), Type: TorrentType, Flags: proto.FlagTorrent, Info: info.Bytes()})
	}
	total := info.TotalLength()
	off := int64(q.Chunk) * proto.ChunkSize
	if q.NbChunks == 0 || off >= total {
		return mc.send(unavailable)
	}
	end := min(off+int64(q.NbChunks)*proto.ChunkSize, total)
	first, last, err := info.PieceRange(off, end-off)
	if err != nil {
		return mc.send(unavailable)
	}
	sv.use.Lock()
	defer sv.use.Unlock()

	flush := s.cfg.DataChunks * proto.ChunkSize
	buf := make([]byte, 0, flush+int(info.PieceLength()))
	next := q.Chunk // the chunk buf starts at
	sent := false
	send := func(n int) error {
		k := (n + proto.ChunkSize - 1) / proto.ChunkSize
		if err := mc.send(proto.DBProof{Chunk: next, NbChunks: uint32(k)}); err != nil {
			return err
		}
		if err := mc.send(proto.DBData{Chunk: next, Data: buf[:n]}); err != nil {
			return err
		}
		sent = true
		next += uint32(k)
		buf = buf[:copy(buf, buf[n:])]
		return nil
	}
	for p, err := range sv.tr.Pieces(s.ctx, first, last) {
		if err != nil {
			s.log.Info("facilitator: fetch failed", "err", err)
			if sent {
				return mc.send(proto.DBEnd{Reason: proto.DBEndDestroyed})
			}
			return mc.send(unavailable)
		}
		start := int64(p.Index) * info.PieceLength()
		lo, hi := max(off, start)-start, min(end, start+int64(len(p.Data)))-start
		if lo < hi {
			buf = append(buf, p.Data[lo:hi]...)
		}
		for len(buf) >= flush {
			if err := send(flush); err != nil {
				return err
			}
		}
	}
	if len(buf) > 0 {
		// What is left ends at a chunk boundary or at the content's end.
		return send(len(buf))
	}
	return nil
}
