package chunkstore

import (
	"bytes"
	"context"
	"fmt"
	"io"

	bolt "go.etcd.io/bbolt"

	"veil/chunkstore/content"
	"veil/proto"
)

// Reader reads a content in order while it downloads: a Read of a chunk not
// yet stored waits for it, until the Reader's context ends. For a live
// stream there is no end: reads past the newest chunk wait, and reads of
// evicted chunks, or of chunks the fetch jumped over (SkipLive), fail with
// ErrEvicted. Not safe for concurrent use.
type Reader struct {
	s    *Store
	ctx  context.Context
	inf  *info
	off  int64
	recN uint64 // index of the cached record, valid when rec != nil
	rec  []byte
}

var _ io.ReadSeeker = (*Reader)(nil)

// NewReader returns a Reader at offset 0 whose waits end with ctx.
func (s *Store) NewReader(ctx context.Context, name proto.HashName) (*Reader, error) {
	inf, err := s.lookup(name)
	if err != nil {
		return nil, err
	}
	return &Reader{s: s, ctx: ctx, inf: inf}, nil
}

// Size is the content's size, or -1 for a live stream.
func (r *Reader) Size() int64 {
	if r.inf.live {
		return -1
	}
	return int64(r.inf.d.Size)
}

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if !r.inf.live && r.off >= int64(r.inf.d.Size) {
		return 0, io.EOF
	}
	i := uint64(r.off) / content.ChunkSize
	within := int(uint64(r.off) % content.ChunkSize)
	for {
		c, err := r.chunk(i)
		if err != nil {
			return 0, err
		}
		if c != nil {
			n := copy(p, c[within:])
			r.off += int64(n)
			return n, nil
		}
		if err := r.wait(i); err != nil {
			return 0, err
		}
	}
}

// chunk returns chunk i from the cached record, refreshing the cache from
// the store when the chunk is not there yet; a static content's chunk
// verified and queued for the writer is read from the queue. nil means not
// stored. (Ingest queues a range before the writer can commit it, and the
// writer forgets it only once committed: a chunk missing from both the
// queue and, after, the file was not ingested.)
func (r *Reader) chunk(i uint64) ([]byte, error) {
	if r.rec != nil && r.recN == i/GroupChunks {
		if c, _, ok, err := r.inf.fromRecord(r.rec, i); ok || err != nil {
			return c, err
		}
	}
	if !r.inf.live {
		if c := r.s.queuedChunk(r.inf, i); c != nil {
			return c, nil
		}
	}
	r.rec = nil
	err := r.s.db.View(func(tx *bolt.Tx) error {
		cb := contentBucket(tx, r.inf.id)
		if cb == nil {
			return fmt.Errorf("%w: %v", ErrNotFound, r.inf.name)
		}
		if v := cb.Bucket(bucketRecords).Get(u64(i / GroupChunks)); v != nil {
			r.rec, r.recN = bytes.Clone(v), i/GroupChunks
		}
		return nil
	})
	if err != nil || r.rec == nil {
		return nil, err
	}
	c, _, _, err := r.inf.fromRecord(r.rec, i)
	return c, err
}

// wait blocks until the next commit (or deletion), then lets Read retry.
func (r *Reader) wait(i uint64) error {
	r.s.mu.Lock()
	ch, gone, head, floor := r.s.changed, r.inf.gone, r.inf.head, r.s.liveFloorLocked(r.inf)
	r.s.mu.Unlock()
	if gone {
		return fmt.Errorf("%w: %v deleted", ErrNotFound, r.inf.name)
	}
	if i < floor { // live: evicted, or jumped over by the fetch
		return fmt.Errorf("%w: chunk %d (stream at %d, kept from %d)", ErrEvicted, i, head.Length, floor)
	}
	// The commit may have landed between chunk() and taking ch: look again.
	if c, err := r.chunk(i); c != nil || err != nil {
		return err
	}
	select {
	case <-ch:
		return nil
	case <-r.ctx.Done():
		return r.ctx.Err()
	case <-r.s.done:
		return ErrClosed
	}
}

// Seek implements io.Seeker. SeekEnd is refused for a live stream.
func (r *Reader) Seek(offset int64, whence int) (int64, error) {
	var base int64
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		base = r.off
	case io.SeekEnd:
		if r.inf.live {
			return r.off, fmt.Errorf("%w: SeekEnd on a live stream", ErrSeek)
		}
		base = int64(r.inf.d.Size)
	default:
		return r.off, fmt.Errorf("%w: whence %d", ErrSeek, whence)
	}
	if offset > 0 && base > (1<<62)-offset || base+offset < 0 {
		return r.off, fmt.Errorf("%w: offset %d from %d", ErrSeek, offset, base)
	}
	r.off = base + offset
	return r.off, nil
}
