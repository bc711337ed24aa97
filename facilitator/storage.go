package facilitator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
)

// errStoreFull is returned to the torrent client when a chunk would need a
// new piece buffer beyond the capacity; the client then asks for the chunk
// again later, once the reader has taken and dropped earlier pieces.
var errStoreFull = errors.New("facilitator: piece store at capacity")

// pieceStore is the keep-nothing storage of one transfer: piece buffers live
// in memory from the first chunk written until the reader has taken the
// verified piece and released it. Nothing touches the disk, so nothing is
// left to seed or to be found afterwards. Held bytes never exceed capacity:
// a write that would need a buffer beyond it fails and the torrent client
// re-requests the chunk.
//
// The torrent client calls it from its own goroutines; mu guards all fields.
type pieceStore struct {
	capacity int64
	ready    chan struct{} // one-slot wake-up for the reader after MarkComplete

	mu       sync.Mutex
	pieceLen int64
	bufs     map[int][]byte
	done     map[int]bool // verified and marked complete, not yet released
	free     [][]byte     // released full-length buffers, reused
	held     int64        // bytes of all live buffers in bufs
	maxHeld  int64
	refused  int64 // writes refused at capacity
}

func newPieceStore(capacity int64) *pieceStore {
	return &pieceStore{
		capacity: capacity,
		ready:    make(chan struct{}, 1),
		bufs:     make(map[int][]byte),
		done:     make(map[int]bool),
	}
}

var _ storage.ClientImpl = (*pieceStore)(nil)

// OpenTorrent is called once the info is known.
func (s *pieceStore) OpenTorrent(_ context.Context, info *metainfo.Info, _ metainfo.Hash) (storage.TorrentImpl, error) {
	if info.PieceLength > s.capacity {
		return storage.TorrentImpl{}, fmt.Errorf("facilitator: capacity %d is smaller than one %d-byte piece", s.capacity, info.PieceLength)
	}
	s.mu.Lock()
	s.pieceLen = info.PieceLength
	s.mu.Unlock()
	capFn := func() (int64, bool) { return s.capacity, true }
	return storage.TorrentImpl{
		Piece: func(p metainfo.Piece) storage.PieceImpl {
			return storePiece{s: s, i: p.Index(), n: p.Length()}
		},
		Close: func() error { s.releaseAll(); return nil },
		// The request strategy stops asking for pieces once the prioritised
		// ones would not fit in this many bytes.
		Capacity: &capFn,
	}, nil
}

// take returns piece i's verified bytes if it is complete. The slice stays
// valid until release(i).
func (s *pieceStore) take(i int) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.done[i] {
		return nil, false
	}
	return s.bufs[i], true
}

// complete reports whether piece i is verified and held.
func (s *pieceStore) complete(i int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done[i]
}

// release drops piece i: afterwards the store reports it incomplete, and a
// reader that needs it again has it fetched again.
func (s *pieceStore) release(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseLocked(i)
}

// releaseDone drops piece i if it is verified; a piece being written is
// kept.
func (s *pieceStore) releaseDone(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done[i] {
		s.releaseLocked(i)
	}
}

func (s *pieceStore) releaseLocked(i int) {
	b, ok := s.bufs[i]
	if !ok {
		return
	}
	delete(s.bufs, i)
	delete(s.done, i)
	s.held -= int64(cap(b))
	if int64(cap(b)) == s.pieceLen {
		clear(b[:cap(b)])
		s.free = append(s.free, b[:cap(b)])
	}
}

func (s *pieceStore) releaseAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.bufs {
		s.releaseLocked(i)
	}
	s.free = nil
}

// stats reports the bytes held now, the most ever held, and the writes
// refused at capacity.
func (s *pieceStore) stats() (held, maxHeld, refused int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held, s.maxHeld, s.refused
}

// buf returns piece i's buffer, allocating it within capacity.
func (s *pieceStore) bufLocked(i int, n int64) ([]byte, error) {
	if b, ok := s.bufs[i]; ok {
		return b, nil
	}
	// Buffers are accounted at their capacity: a reused full-length buffer
	// for a short last piece still costs a full piece.
	var b []byte
	if k := len(s.free); k > 0 && n <= s.pieceLen {
		b = s.free[k-1][:n]
		s.free = s.free[:k-1]
	}
	size := n
	if b != nil {
		size = int64(cap(b))
	}
	if s.held+size > s.capacity {
		if b != nil {
			s.free = append(s.free, b[:cap(b)])
		}
		s.refused++
		return nil, errStoreFull
	}
	if b == nil {
		b = make([]byte, n)
	}
	s.bufs[i] = b
	s.held += size
	s.maxHeld = max(s.maxHeld, s.held)
	return b, nil
}

// storePiece is one piece's view of the store.
type storePiece struct {
	s *pieceStore
	i int
	n int64
}

func (p storePiece) ReadAt(b []byte, off int64) (int, error) {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	buf, ok := p.s.bufs[p.i]
	if !ok {
		// Never written or already released: there is nothing to read, and
		// zeros would hash as a failed piece and blame a peer.
		return 0, io.ErrUnexpectedEOF
	}
	if off < 0 || off >= int64(len(buf)) {
		return 0, io.EOF
	}
	n := copy(b, buf[off:])
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

func (p storePiece) WriteAt(b []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(b)) > p.n {
		return 0, fmt.Errorf("facilitator: write of %d bytes at %d outside a %d-byte piece", len(b), off, p.n)
	}
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	if p.s.done[p.i] {
		// A late duplicate of a chunk of a verified piece: the bytes are
		// already there and must not change under the reader.
		return len(b), nil
	}
	buf, err := p.s.bufLocked(p.i, p.n)
	if err != nil {
		return 0, err
	}
	return copy(buf[off:], b), nil
}

func (p storePiece) MarkComplete() error {
	p.s.mu.Lock()
	if _, ok := p.s.bufs[p.i]; !ok {
		p.s.mu.Unlock()
		return fmt.Errorf("facilitator: piece %d marked complete with no data", p.i)
	}
	p.s.done[p.i] = true
	p.s.mu.Unlock()
	select {
	case p.s.ready <- struct{}{}:
	default:
	}
	return nil
}

func (p storePiece) MarkNotComplete() error {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	delete(p.s.done, p.i)
	return nil
}

func (p storePiece) Completion() storage.Completion {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	return storage.Completion{Ok: true, Complete: p.s.done[p.i]}
}
