package chunkstore

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	bolt "go.etcd.io/bbolt"

	"veil/chunkstore/content"
	"veil/proto"
)

// Publish reads a static content from src, chunks it, builds its tree,
// signs its descriptor with priv and stores it all, committing every
// BatchBytes. Until the last commit the content is invisible and a crash
// leaves nothing behind (Open drops unfinished publications).
func (s *Store) Publish(ctx context.Context, priv ed25519.PrivateKey, mime string, created uint64, src io.Reader) (proto.DBConnected, proto.HashName, error) {
	fail := func(err error) (proto.DBConnected, proto.HashName, error) {
		return proto.DBConnected{}, proto.HashName{}, fmt.Errorf("chunkstore: publish: %w", err)
	}
	var id uint64
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		if _, id, err = newContent(tx); err != nil {
			return err
		}
		return tx.Bucket(bucketPending).Put(u64(id), nil)
	})
	if err != nil {
		return fail(err)
	}
	var stop func() error // set below: waits for the committer
	abandon := func() {
		stop()
		s.db.Update(func(tx *bolt.Tx) error {
			tx.Bucket(bucketContent).DeleteBucket(u64(id))
			return tx.Bucket(bucketPending).Delete(u64(id))
		})
	}
	var nodes []content.Node
	tree := content.Builder{KeepSpan: KeepSpan, OnNode: func(n content.Node) { nodes = append(nodes, n) }}
	var recs [][]byte
	recBytes := 0
	// A committer goroutine writes batch k while this one hashes batch
	// k+1; at most one batch waits.
	type batch struct {
		first uint64
		recs  [][]byte
		nodes []content.Node
	}
	batches := make(chan batch, 1)
	committed := make(chan error, 1)
	go func() {
		var err error
		for b := range batches {
			if err != nil {
				continue
			}
			err = s.db.Update(func(tx *bolt.Tx) error {
				cb := contentBucket(tx, id)
				rb, nb := cb.Bucket(bucketRecords), cb.Bucket(bucketNodes)
				for k, rec := range b.recs {
					if err := rb.Put(u64(b.first/GroupChunks+uint64(k)), rec); err != nil {
						return err
					}
				}
				for _, n := range b.nodes {
					if err := nb.Put(nodeKey(n.A, n.B), n.Hash[:]); err != nil {
						return err
					}
				}
				return nil
			})
		}
		committed <- err
	}()
	stopped := false
	stop = func() error { // waits for every batch handed over
		if stopped {
			return nil
		}
		stopped = true
		close(batches)
		return <-committed
	}
	defer stop()
	flush := func() {
		first := tree.Len() - uint64(recBytes/content.ChunkSize)
		first -= first % GroupChunks
		batches <- batch{first: first, recs: recs, nodes: nodes}
		recs, nodes, recBytes = nil, nil, 0
	}
	var size uint64
	buf := make([]byte, GroupChunks*content.ChunkSize)
	for {
		if err := ctx.Err(); err != nil {
			abandon()
			return fail(err)
		}
		n, err := io.ReadFull(src, buf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			abandon()
			return fail(fmt.Errorf("reading: %w", err))
		}
		slots := (n + content.ChunkSize - 1) / content.ChunkSize
		rec := make([]byte, 8+slots*content.ChunkSize)
		copy(rec[8:], buf[:n])
		binary.BigEndian.PutUint64(rec, ^uint64(0)>>(64-slots))
		for off := 0; off < n; off += content.ChunkSize {
			tree.Append(content.LeafHash(buf[off:min(off+content.ChunkSize, n)]))
		}
		size += uint64(n)
		if content.ChunkCount(size) > content.MaxChunks {
			abandon()
			return fail(content.ErrTooLarge)
		}
		recs = append(recs, rec)
		recBytes += slots * content.ChunkSize
		if recBytes >= s.cfg.BatchBytes {
			flush()
		}
		if n < len(buf) {
			break
		}
	}
	root := tree.Root() // also reports the right-edge nodes
	flush()
	if err := stop(); err != nil {
		abandon()
		return fail(err)
	}
	d, err := content.NewDescriptor(priv, size, mime, root, created)
	if err != nil {
		abandon()
		return fail(err)
	}
	name := content.HashNameOf(d)
	err = s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketNames).Get(name[:]) != nil {
			return errExists
		}
		cb := contentBucket(tx, id)
		if err := cb.Put(keyDesc, d.Append(nil)); err != nil {
			return err
		}
		if err := cb.Put(keyCount, u64(tree.Len())); err != nil {
			return err
		}
		if err := tx.Bucket(bucketNames).Put(name[:], u64(id)); err != nil {
			return err
		}
		return tx.Bucket(bucketPending).Delete(u64(id))
	})
	if errors.Is(err, errExists) {
		abandon()
		return d, name, nil
	}
	if err != nil {
		abandon()
		return fail(err)
	}
	return d, name, nil
}

var errExists = errors.New("exists")

// LivePublisher appends to a live stream it signs. Not safe for concurrent
// use.
type LivePublisher struct {
	s    *Store
	name proto.HashName
	w    *content.LiveWriter
	buf  []byte // bytes of a chunk not yet full
}

// NewLivePublisher creates a live stream signed by priv, stores its
// descriptor, and returns the publisher.
func (s *Store) NewLivePublisher(priv ed25519.PrivateKey, mime string, created uint64) (*LivePublisher, error) {
	d, err := content.NewLiveDescriptor(priv, mime, created)
	if err != nil {
		return nil, err
	}
	name, err := s.PutDescriptor(d)
	if err != nil {
		return nil, err
	}
	return &LivePublisher{s: s, name: name, w: content.NewLiveWriter(priv, name, KeepSpan, nil)}, nil
}

// Name is the stream's hash_name.
func (p *LivePublisher) Name() proto.HashName { return p.name }

// Append adds data at ts (unix seconds). Full chunks are appended, a new
// head is signed and they are queued for storage; a tail shorter than a
// chunk waits for the next Append. It returns the newest head.
func (p *LivePublisher) Append(ctx context.Context, ts uint32, data []byte) (content.Head, error) {
	p.buf = append(p.buf, data...)
	nfull := len(p.buf) / content.ChunkSize
	if nfull == 0 {
		return p.s.Head(p.name)
	}
	start, peaks := p.w.Len(), p.w.Peaks()
	r := content.Range{Start: start}
	for k := 0; k < nfull; k++ {
		c := p.buf[k*content.ChunkSize : (k+1)*content.ChunkSize]
		if _, err := p.w.Append(ts, c); err != nil {
			return content.Head{}, err
		}
		r.Chunks = append(r.Chunks, c)
		r.Times = append(r.Times, ts)
	}
	head := p.w.Head(ts)
	// The stream's own tree proves the new chunks; Ingest re-verifies them
	// (a few microseconds) so the store has a single entry point.
	var err error
	r.Proof, err = proofOfTail(head, start, peaks)
	if err != nil {
		return content.Head{}, err
	}
	if err := p.s.Ingest(ctx, p.name, r); err != nil {
		return content.Head{}, err
	}
	p.buf = append(p.buf[:0], p.buf[nfull*content.ChunkSize:]...)
	return head, nil
}

// proofOfTail proves chunks [start, head.Length): its only siblings are on
// the left, and they are the peaks of the first start leaves.
func proofOfTail(head content.Head, start uint64, peaks []content.Node) (content.Proof, error) {
	hs, err := content.BuildProof(head.Length, start, head.Length, func(a, b uint64) (content.Hash, error) {
		for _, n := range peaks {
			if n.A == a && n.B == b {
				return n.Hash, nil
			}
		}
		return content.Hash{}, fmt.Errorf("%w: [%d,%d)", content.ErrNoNode, a, b)
	})
	return content.Proof{Live: true, Head: head, Hashes: hs}, err
}

// ResumeLivePublisher continues a live stream this store published (or
// holds the newest chunks of) after a restart: it rebuilds the tree's peaks
// from the store and checks them against the newest signed head. The key
// must be the stream's publisher key.
func (s *Store) ResumeLivePublisher(priv ed25519.PrivateKey, name proto.HashName) (*LivePublisher, error) {
	inf, err := s.lookup(name)
	if err != nil {
		return nil, err
	}
	if !inf.live {
		return nil, fmt.Errorf("chunkstore: resume %v: not a live stream", name)
	}
	if !bytes.Equal(priv.Public().(ed25519.PublicKey), inf.d.PublicKey) {
		return nil, fmt.Errorf("chunkstore: resume %v: %w: not the publisher's key", name, content.ErrBadSignature)
	}
	if err := s.Flush(context.Background()); err != nil {
		return nil, err
	}
	head, err := s.Head(name)
	if err != nil {
		return nil, err
	}
	var peaks []content.Node
	err = s.db.View(func(tx *bolt.Tx) error {
		cb := contentBucket(tx, inf.id)
		if cb == nil {
			return fmt.Errorf("%w: %v", ErrNotFound, name)
		}
		node := inf.nodeFunc(cb)
		for _, sp := range content.PeakSpans(head.Length) {
			h, err := node(sp[0], sp[1])
			if err != nil {
				return err
			}
			peaks = append(peaks, content.Node{A: sp[0], B: sp[1], Hash: h})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("chunkstore: resume %v: %w", name, err)
	}
	w, err := content.ResumeLiveWriter(priv, name, peaks, KeepSpan, nil)
	if err != nil {
		return nil, err
	}
	if w.Root() != head.Root {
		return nil, fmt.Errorf("chunkstore: resume %v: %w: stored tree does not lead to the newest head", name, ErrCorrupt)
	}
	return &LivePublisher{s: s, name: name, w: w}, nil
}
