package chunkstore

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"veil/chunkstore/content"
	"veil/proto"
)

// op is one item of the writer's queue: a verified range, or a flush.
type op struct {
	inf   *info
	recs  []opRec // the range laid out as records, in order
	size  int     // chunk bytes
	nodes []content.Node
	head  *content.Head // live: a head newer than any committed
	// restart: head was taken as a new start (checkHead): the nodes held
	// before it are dropped.
	restart bool

	flushed chan error // flush barrier
}

// opRec is part of a record: a full-size record buffer holding only the
// chunks of one range (its have bitmap says which). Laying chunks out in
// the caller's goroutine keeps that copy off the single writer.
type opRec struct {
	r   uint64
	buf []byte
}

// Ingest verifies r against the content's descriptor (or, for a live
// stream, the signed head its proof carries) and queues it for the next
// commit. Nothing is queued if any byte fails. It returns once queued (r's
// buffers are not retained): call Flush to wait for the disk. It blocks
// while the queue is full, honouring ctx. Chunks already held are skipped
// when written.
func (s *Store) Ingest(ctx context.Context, name proto.HashName, r content.Range) error {
	inf, err := s.lookup(name)
	if err != nil {
		return err
	}
	v, err := content.Verify(inf.d, name, r, KeepSpan)
	if err != nil {
		s.rejects.Add(1)
		return fmt.Errorf("chunkstore: ingest [%d,+%d) of %v: %w", r.Start, len(r.Chunks), name, err)
	}
	o := &op{inf: inf, nodes: v.Nodes}
	for k, c := range r.Chunks {
		i := r.Start + uint64(k)
		ri, slot := i/GroupChunks, i%GroupChunks
		if len(o.recs) == 0 || o.recs[len(o.recs)-1].r != ri {
			o.recs = append(o.recs, opRec{r: ri, buf: make([]byte, inf.recordLen(ri))})
		}
		buf := o.recs[len(o.recs)-1].buf
		binary.BigEndian.PutUint64(buf, binary.BigEndian.Uint64(buf)|1<<slot)
		copy(buf[inf.slotOffset(slot):], c)
		if inf.live {
			binary.BigEndian.PutUint32(buf[8+4*slot:], r.Times[k])
		}
		o.size += len(c)
	}
	if inf.live {
		newer, restart, err := s.checkHead(inf, name, r)
		if err != nil {
			return fmt.Errorf("chunkstore: ingest [%d,+%d) of %v: %w", r.Start, len(r.Chunks), name, err)
		}
		if newer {
			o.head, o.restart = &r.Proof.Head, restart // persisted with the chunks
		}
	}
	if inf.live {
		return s.enqueue(ctx, o)
	}
	// A static content's chunks are readable from the queue at once: a
	// Reader waiting for them need not wait for the commit.
	s.mu.Lock()
	if !inf.gone {
		if inf.queued == nil {
			inf.queued = make(map[uint64][]*opRec)
		}
		for k := range o.recs {
			inf.queued[o.recs[k].r] = append(inf.queued[o.recs[k].r], &o.recs[k])
		}
		s.broadcastLocked()
	}
	s.mu.Unlock()
	err = s.enqueue(ctx, o)
	if err != nil {
		s.mu.Lock()
		s.unqueueLocked(o)
		s.mu.Unlock()
	}
	return err
}

// unqueueLocked forgets o's records in its content's queued ranges.
// s.mu must be held.
func (s *Store) unqueueLocked(o *op) {
	if o.inf == nil || o.inf.queued == nil {
		return
	}
	for k := range o.recs {
		or := &o.recs[k]
		list := o.inf.queued[or.r]
		for j, x := range list {
			if x == or {
				list = append(list[:j], list[j+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(o.inf.queued, or.r)
		} else {
			o.inf.queued[or.r] = list
		}
	}
}

// checkHead decides whether the head of a verified live range may be
// used, and takes it as the newest head when it is longer. Every head the
// store takes extends the one it had, so the store never holds nodes of
// two histories:
//
//   - equal length: the roots must be equal (else ErrForked);
//   - longer: it must prove it extends ours, either by a range that
//     starts at our length (its left siblings are then our tree's peaks,
//     which must fold to our root) or by an RFC 6962 consistency proof
//     from our length; and it may not be older than ours
//     (ErrNoConsistency, ErrForked, ErrStaleHead); except that a head
//     longer than ours by the kept windows (4 x WindowBytes) or more
//     needs no consistency proof (none can come: the nodes are evicted
//     everywhere): the store starts again from it, like a new reader,
//     and drops every chunk and node it held (Stats.LiveRestarts);
//   - shorter (an ORDB behind, or one replaying old heads): its chunks are
//     kept only if the store's own nodes prove it a prefix of ours; it
//     never replaces ours (ErrStaleHead, ErrForked);
//   - with Config.MaxHeadAge, any head signed longer ago is refused
//     (ErrStaleHead).
func (s *Store) checkHead(inf *info, name proto.HashName, r content.Range) (newer, restart bool, err error) {
	h := r.Proof.Head
	if s.cfg.MaxHeadAge > 0 {
		now := time.Now
		if s.cfg.Now != nil {
			now = s.cfg.Now
		}
		if age := now().Sub(time.Unix(int64(h.Timestamp), 0)); age > s.cfg.MaxHeadAge {
			return false, false, fmt.Errorf("%w: head of %d chunks signed %v ago (limit %v)", ErrStaleHead, h.Length, age.Round(time.Second), s.cfg.MaxHeadAge)
		}
	}
	s.mu.Lock()
	cur, gone := inf.head, inf.gone
	switch {
	case gone:
		s.mu.Unlock()
		return false, false, fmt.Errorf("%w: %v", ErrNotFound, name)
	case h.Length == cur.Length:
		s.mu.Unlock()
		if h.Root != cur.Root && h.Length != 0 {
			return false, false, fmt.Errorf("%w: two roots for length %d", ErrForked, h.Length)
		}
		return false, false, nil
	case h.Length > cur.Length:
		// Decided and taken under the lock: two longer heads racing are
		// each checked against the head the other left.
		defer s.mu.Unlock()
		if cur.Length > 0 {
			if h.Timestamp < cur.Timestamp {
				return false, false, fmt.Errorf("%w: head of %d chunks at %d, ours of %d at %d", ErrStaleHead, h.Length, h.Timestamp, cur.Length, cur.Timestamp)
			}
			if err := extends(cur, r); err != nil {
				// A head longer than ours by the kept windows or more, no
				// holder can prove consistent with ours (the nodes it
				// needs are evicted everywhere): every chunk we hold is
				// older than what it keeps, so we start again from it,
				// as a new reader would (the commit evicts our chunks).
				// A nearer head still needs the proof.
				if !errors.Is(err, ErrNoConsistency) || h.Length-cur.Length < s.cfg.keepChunks() {
					return false, false, err
				}
				s.restarts.Add(1)
				restart = true
			}
		}
		inf.head = h
		return true, restart, nil
	}
	s.mu.Unlock()
	if h.Timestamp > cur.Timestamp {
		return false, false, fmt.Errorf("%w: head of %d chunks signed after ours of %d (a rollback)", ErrForked, h.Length, cur.Length)
	}
	// A shorter head. Every head this store took extends the previous
	// one, so the nodes it holds are of one history: if they prove h a
	// prefix of cur, h's chunks are ours too.
	var proof []content.Hash
	err = s.db.View(func(tx *bolt.Tx) error {
		cb := contentBucket(tx, inf.id)
		if cb == nil {
			return fmt.Errorf("%w: %v", ErrNotFound, name)
		}
		proof, err = content.ConsistencyProof(h.Length, cur.Length, inf.nodeFunc(cb))
		return err
	})
	if err != nil {
		return false, false, fmt.Errorf("%w: head of %d chunks, ours %d: %w", ErrStaleHead, h.Length, cur.Length, err)
	}
	if err := content.VerifyConsistency(h.Length, cur.Length, h.Root, cur.Root, proof); err != nil {
		return false, false, fmt.Errorf("%w: %w", ErrForked, err)
	}
	return false, false, nil
}

// extends checks that the (verified) range r's head extends cur.
func extends(cur content.Head, r content.Range) error {
	h, p := r.Proof.Head, r.Proof
	if r.Start == cur.Length {
		// The proof's first hashes are the left siblings of [Start, ...):
		// the peaks of the first cur.Length leaves, largest first. The
		// range proof checked that they build h.Root, so if they fold to
		// cur.Root, h's tree starts with cur's.
		np := bits.OnesCount64(cur.Length)
		if len(p.Hashes) < np {
			return fmt.Errorf("%w: %d proof hashes, %d peaks", ErrForked, len(p.Hashes), np)
		}
		root := p.Hashes[np-1]
		for i := np - 2; i >= 0; i-- {
			root = content.ParentHash(p.Hashes[i], root)
		}
		if root != cur.Root {
			return fmt.Errorf("%w: head of %d chunks does not extend ours of %d", ErrForked, h.Length, cur.Length)
		}
		return nil
	}
	if p.From != cur.Length {
		return fmt.Errorf("%w: ours has %d chunks, proof from %d", ErrNoConsistency, cur.Length, p.From)
	}
	if err := content.VerifyConsistency(cur.Length, h.Length, cur.Root, h.Root, p.Consistency); err != nil {
		return fmt.Errorf("%w: %w", ErrForked, err)
	}
	return nil
}

func (s *Store) enqueue(ctx context.Context, o *op) error {
	s.mu.Lock()
	werr := s.werr
	s.mu.Unlock()
	if werr != nil {
		return werr
	}
	select {
	case <-s.quit: // checked first: a send could otherwise win the select
		return ErrClosed
	default:
	}
	select {
	case s.ops <- o:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.quit:
		return ErrClosed
	}
}

// Flush waits until every range queued before it is committed to disk.
func (s *Store) Flush(ctx context.Context) error {
	o := &op{flushed: make(chan error, 1)}
	if err := s.enqueue(ctx, o); err != nil {
		return err
	}
	select {
	case err := <-o.flushed:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.werr != nil {
			return s.werr
		}
		return ErrClosed
	}
}

// writer is the only goroutine that commits ranges. It gathers queued ops
// into batches of about BatchBytes.
func (s *Store) writer() {
	defer close(s.done)
	var batch []*op
	var flushes []chan error
	pending := 0
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	commit := func() {
		timer.Stop()
		var err error
		if len(batch) > 0 {
			err = s.commit(batch)
			if err != nil {
				s.mu.Lock()
				if s.werr == nil {
					s.werr = fmt.Errorf("chunkstore: commit: %w", err)
				}
				err = s.werr
				s.mu.Unlock()
			}
		}
		for _, f := range flushes {
			f <- err
		}
		batch, flushes, pending = batch[:0], flushes[:0], 0
	}
	add := func(o *op) {
		if o.flushed != nil {
			flushes = append(flushes, o.flushed)
			commit()
			return
		}
		if len(batch) == 0 {
			timer.Reset(s.cfg.BatchDelay)
		}
		batch = append(batch, o)
		pending += o.size
		if pending >= s.cfg.BatchBytes {
			commit()
		}
	}
	for {
		select {
		case o := <-s.ops:
			add(o)
		case <-timer.C:
			commit()
		case <-s.quit:
			for {
				select {
				case o := <-s.ops:
					add(o)
				default:
					commit()
					return
				}
			}
		}
	}
}

// commit writes a batch in one bbolt transaction. Ranges of deleted
// contents are dropped.
func (s *Store) commit(batch []*op) error {
	type recKey struct {
		inf *info
		r   uint64
	}
	recs := make(map[recKey][]byte)
	adopted := make(map[recKey]bool) // recs[k] is an op's buffer, which readers may be reading
	added := make(map[*info]uint64)
	lost := make(map[*info]uint64) // chunks counted in damaged records replaced
	heads := make(map[*info]*content.Head)
	var evicted map[*info]uint64
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, o := range batch {
			cb := contentBucket(tx, o.inf.id)
			if cb == nil {
				continue
			}
			rb, nb := cb.Bucket(bucketRecords), cb.Bucket(bucketNodes)
			if o.restart {
				// A new start: no node of the history before it stays
				// (its chunks go with the eviction below).
				var dead [][]byte
				c := nb.Cursor()
				for k, _ := c.First(); k != nil; k, _ = c.Next() {
					dead = append(dead, append([]byte(nil), k...))
				}
				for _, k := range dead {
					if err := nb.Delete(k); err != nil {
						return err
					}
				}
			}
			for _, or := range o.recs {
				key := recKey{o.inf, or.r}
				rec := recs[key]
				if rec == nil {
					v := rb.Get(u64(key.r))
					if v != nil && len(v) != o.inf.recordLen(key.r) {
						// A damaged record: the verified range replaces
						// it (failing the commit would stop the writer
						// for every content); its chunks no longer count.
						if len(v) >= 8 {
							lost[o.inf] += popcount(binary.BigEndian.Uint64(v))
						}
						v = nil
					}
					if v == nil {
						// A new record: adopt the range's buffer as is.
						recs[key] = or.buf
						adopted[key] = true
						added[o.inf] += popcount(binary.BigEndian.Uint64(or.buf))
						continue
					}
					rec = append([]byte(nil), v...)
					recs[key] = rec
				} else if adopted[key] {
					rec = bytes.Clone(rec)
					recs[key], adopted[key] = rec, false
				}
				added[o.inf] += mergeRecord(o.inf, rec, or.buf)
			}
			for _, n := range o.nodes {
				if err := nb.Put(nodeKey(n.A, n.B), n.Hash[:]); err != nil {
					return err
				}
			}
			if o.head != nil && (heads[o.inf] == nil || o.head.Length > heads[o.inf].Length) {
				heads[o.inf] = o.head
			}
		}
		keys := make([]recKey, 0, len(recs))
		for k := range recs {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b recKey) int {
			if c := cmp.Compare(a.inf.id, b.inf.id); c != 0 {
				return c
			}
			return cmp.Compare(a.r, b.r)
		})
		for _, k := range keys {
			if err := contentBucket(tx, k.inf.id).Bucket(bucketRecords).Put(u64(k.r), recs[k]); err != nil {
				return err
			}
		}
		for inf, h := range heads {
			cb := contentBucket(tx, inf.id)
			if old := cb.Get(keyHead); old != nil {
				if oh, err := content.ParseHead(old); err == nil && oh.Length >= h.Length {
					continue
				}
			}
			if err := cb.Put(keyHead, h.Append(nil)); err != nil {
				return err
			}
			n, err := s.evict(cb, inf, h.Length)
			if err != nil {
				return err
			}
			if n > 0 {
				if evicted == nil {
					evicted = make(map[*info]uint64)
				}
				evicted[inf] = n
			}
		}
		for inf, n := range added {
			cb := contentBucket(tx, inf.id)
			var count uint64
			if v := cb.Get(keyCount); len(v) == 8 {
				count = binary.BigEndian.Uint64(v)
			}
			count += n
			count -= min(evicted[inf]+lost[inf], count)
			if err := cb.Put(keyCount, u64(count)); err != nil {
				return err
			}
		}
		for inf, n := range evicted {
			if _, ok := added[inf]; ok {
				continue
			}
			cb := contentBucket(tx, inf.id)
			var count uint64
			if v := cb.Get(keyCount); len(v) == 8 {
				count = binary.BigEndian.Uint64(v)
			}
			if err := cb.Put(keyCount, u64(count-min(n, count))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.commits.Add(1)
	var reports []func()
	s.mu.Lock()
	for _, o := range batch {
		s.unqueueLocked(o)
	}
	for inf, n := range added {
		inf.count += n
		inf.count -= min(lost[inf], inf.count)
	}
	for inf, n := range evicted {
		inf.count -= min(n, inf.count)
	}
	for inf := range added {
		if inf.live || s.cfg.OnProgress == nil {
			continue
		}
		if q := quarter(inf.count, inf.n); q > inf.quarter {
			inf.quarter = q
			name := inf.name
			reports = append(reports, func() { s.cfg.OnProgress(name, q) })
		}
	}
	s.broadcastLocked()
	s.mu.Unlock()
	for _, f := range reports {
		f()
	}
	return nil
}

// evict drops a live stream's records and small nodes entirely older than
// the newest keepChunks chunks, and returns how many chunks it dropped.
func (s *Store) evict(cb *bolt.Bucket, inf *info, length uint64) (uint64, error) {
	keep := s.cfg.keepChunks()
	if length <= keep {
		return 0, nil
	}
	cut := length - keep
	var dropped uint64
	rb := cb.Bucket(bucketRecords)
	var dead [][]byte
	c := rb.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) != 8 {
			continue // a damaged key: not ours to judge here (Have reports it)
		}
		if (binary.BigEndian.Uint64(k)+1)*GroupChunks > cut {
			break
		}
		if len(v) >= 8 {
			dropped += popcount(binary.BigEndian.Uint64(v))
		}
		dead = append(dead, append([]byte(nil), k...))
	}
	for _, k := range dead {
		if err := rb.Delete(k); err != nil {
			return 0, err
		}
	}
	// Small nodes of evicted chunks are useless; large ones stay, as left
	// siblings of the proofs of newer chunks.
	nb := cb.Bucket(bucketNodes)
	dead = dead[:0]
	c = nb.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) != 16 {
			continue // a damaged key
		}
		a, b := binary.BigEndian.Uint64(k), binary.BigEndian.Uint64(k[8:])
		if a >= cut {
			break
		}
		if b <= cut && b-a < KeepSpan {
			dead = append(dead, append([]byte(nil), k...))
		}
	}
	for _, k := range dead {
		if err := nb.Delete(k); err != nil {
			return 0, err
		}
	}
	return dropped, nil
}

// mergeRecord copies into rec the chunks of src it lacks, and returns how
// many it copied.
func mergeRecord(inf *info, rec, src []byte) uint64 {
	have, want := binary.BigEndian.Uint64(rec), binary.BigEndian.Uint64(src)
	missing := want &^ have
	for m := missing; m != 0; m &= m - 1 {
		slot := uint64(bits.TrailingZeros64(m))
		off := inf.slotOffset(slot)
		copy(rec[off:off+content.ChunkSize], src[off:])
		if inf.live {
			copy(rec[8+4*slot:8+4*slot+4], src[8+4*slot:])
		}
	}
	binary.BigEndian.PutUint64(rec, have|missing)
	return popcount(missing)
}
