package chunkstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"

	"veil/chunkstore/content"
	"veil/proto"
)

// GroupChunks is the number of chunks per bbolt record; KeepSpan the
// smallest tree node the store always keeps (smaller ones are recomputed
// from the chunks of one record).
const (
	GroupChunks = 64
	KeepSpan    = GroupChunks
)

// Have's words are records' bitmaps: a record must hold 64 chunks.
var _ [GroupChunks - 64]struct{}
var _ [64 - GroupChunks]struct{}

var (
	bucketNames   = []byte("names")
	bucketPending = []byte("pending")
	bucketContent = []byte("c")
	bucketRecords = []byte("r")
	bucketNodes   = []byte("n")
	keyDesc       = []byte("d")
	keyCount      = []byte("count")
	keyHead       = []byte("head")
)

// Store is an open chunk store. Its methods are safe for concurrent use.
type Store struct {
	db  *bolt.DB
	cfg Config

	ops  chan *op
	quit chan struct{} // closed by Close
	done chan struct{} // closed when the writer returns

	closeOnce sync.Once

	commits  atomic.Int64 // transactions the writer committed (tests, stats)
	rejects  atomic.Int64 // ranges Ingest refused for failing verification (stats.go)
	restarts atomic.Int64 // live heads taken as a new start (stats.go)

	// mu guards infos, changed, werr and the mutable fields of every info.
	mu      sync.Mutex
	infos   map[proto.HashName]*info
	changed chan struct{} // closed and replaced after every commit or delete
	werr    error         // sticky writer error
}

// info is what the store keeps in memory about one content.
type info struct {
	name  proto.HashName
	id    uint64
	d     proto.DBConnected
	live  bool
	n     uint64 // chunks of a static content
	stamp content.Stamp

	// guarded by Store.mu
	head    content.Head // newest live head verified
	count   uint64       // chunks held, as committed
	quarter int          // highest quarter reported, -1 for none
	gone    bool         // deleted
	skipTo  uint64       // live: the fetch jumped to here; missing chunks below it will not come
	// queued are a static content's verified ranges Ingest queued and
	// the writer has not committed yet, by record: Readers read them
	// from here rather than wait for the commit (an fsync). The buffers
	// are not written to once queued.
	queued map[uint64][]*opRec
}

// Open opens (or creates) the store at cfg.Path and starts its writer.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	db, err := bolt.Open(cfg.Path, 0o600, &bolt.Options{
		Timeout:        cfg.LockTimeout,
		NoSync:         cfg.NoSync,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (waited %v)", ErrLocked, cfg.Path, cfg.LockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("chunkstore: opening %s: %w", cfg.Path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketNames, bucketPending, bucketContent} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		// Drop publications a crash interrupted.
		var ids [][]byte
		pb := tx.Bucket(bucketPending)
		pb.ForEach(func(k, _ []byte) error { ids = append(ids, bytes.Clone(k)); return nil })
		for _, id := range ids {
			if tx.Bucket(bucketContent).Bucket(id) != nil {
				if err := tx.Bucket(bucketContent).DeleteBucket(id); err != nil {
					return err
				}
			}
			if err := pb.Delete(id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("chunkstore: preparing %s: %w", cfg.Path, err)
	}
	s := &Store{
		db: db, cfg: cfg,
		ops:     make(chan *op, cfg.QueueLen),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
		infos:   make(map[proto.HashName]*info),
		changed: make(chan struct{}),
	}
	go s.writer()
	return s, nil
}

// Close commits what is queued, stops the writer and closes the file. It is
// idempotent and returns the writer's error, if any.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.quit)
		<-s.done
		s.mu.Lock()
		err = s.werr
		s.mu.Unlock()
		if cerr := s.db.Close(); err == nil {
			err = cerr
		}
	})
	return err
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func nodeKey(a, b uint64) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 16), a)
	return binary.BigEndian.AppendUint64(k, b)
}

// contentBucket returns content id's bucket, or nil if it is missing or
// damaged (without its records and nodes buckets), which callers report.
func contentBucket(tx *bolt.Tx, id uint64) *bolt.Bucket {
	cb := tx.Bucket(bucketContent).Bucket(u64(id))
	if cb == nil || cb.Bucket(bucketRecords) == nil || cb.Bucket(bucketNodes) == nil {
		return nil
	}
	return cb
}

// PutDescriptor checks d and records it; chunks of d can then be ingested.
// Putting a descriptor already held is not an error.
func (s *Store) PutDescriptor(d proto.DBConnected) (proto.HashName, error) {
	if err := content.CheckDescriptor(d); err != nil {
		return proto.HashName{}, err
	}
	name := content.HashNameOf(d)
	err := s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketNames).Get(name[:]) != nil {
			return nil
		}
		cb, id, err := newContent(tx)
		if err != nil {
			return err
		}
		if err := cb.Put(keyDesc, d.Append(nil)); err != nil {
			return err
		}
		return tx.Bucket(bucketNames).Put(name[:], u64(id))
	})
	if err != nil {
		return name, fmt.Errorf("chunkstore: storing descriptor: %w", err)
	}
	s.mu.Lock()
	s.broadcastLocked()
	s.mu.Unlock()
	return name, nil
}

// Changed returns a channel closed at the store's next change: a
// descriptor put, a commit, a deletion, or verified chunks queued.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

func newContent(tx *bolt.Tx) (*bolt.Bucket, uint64, error) {
	all := tx.Bucket(bucketContent)
	id, err := all.NextSequence()
	if err != nil {
		return nil, 0, err
	}
	cb, err := all.CreateBucket(u64(id))
	if err != nil {
		return nil, 0, err
	}
	for _, b := range [][]byte{bucketRecords, bucketNodes} {
		sub, err := cb.CreateBucket(b)
		if err != nil {
			return nil, 0, err
		}
		sub.FillPercent = 1 // keys mostly arrive in order
	}
	return cb, id, nil
}

// lookup returns the content's info, loading it on first use.
func (s *Store) lookup(name proto.HashName) (*info, error) {
	s.mu.Lock()
	inf := s.infos[name]
	s.mu.Unlock()
	if inf != nil {
		return inf, nil
	}
	inf = &info{name: name, quarter: -1}
	err := s.db.View(func(tx *bolt.Tx) error {
		idb := tx.Bucket(bucketNames).Get(name[:])
		if idb == nil {
			return fmt.Errorf("%w: %v", ErrNotFound, name)
		}
		if len(idb) != 8 {
			return fmt.Errorf("%w: content ID of %v has %d bytes", ErrCorrupt, name, len(idb))
		}
		inf.id = binary.BigEndian.Uint64(idb)
		cb := contentBucket(tx, inf.id)
		if cb == nil {
			return fmt.Errorf("%w: %v has no data bucket", ErrCorrupt, name)
		}
		d, err := proto.ParseDBConnected(bytes.Clone(cb.Get(keyDesc)))
		if err != nil {
			return fmt.Errorf("%w: descriptor of %v: %w", ErrCorrupt, name, err)
		}
		inf.d = d
		if v := cb.Get(keyCount); len(v) == 8 {
			inf.count = binary.BigEndian.Uint64(v)
		}
		if v := cb.Get(keyHead); v != nil {
			if inf.head, err = content.ParseHead(v); err != nil {
				return fmt.Errorf("%w: head of %v: %w", ErrCorrupt, name, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	inf.live = inf.d.Flags&proto.FlagLive != 0
	inf.n = content.ChunkCount(inf.d.Size)
	inf.stamp = content.StaticStamp(inf.d)
	if !inf.live {
		inf.quarter = quarter(inf.count, inf.n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur := s.infos[name]; cur != nil {
		return cur, nil
	}
	s.infos[name] = inf
	return inf, nil
}

// quarter is DB_INFO's P for count of n chunks held: 0 at 25% ... 3 at
// 100%, -1 below 25%.
func quarter(count, n uint64) int {
	if n == 0 {
		return 3
	}
	return int(min(4*count/n, 4)) - 1
}

// Descriptor returns the descriptor of a content held.
func (s *Store) Descriptor(name proto.HashName) (proto.DBConnected, error) {
	inf, err := s.lookup(name)
	if err != nil {
		return proto.DBConnected{}, err
	}
	return inf.d, nil
}

// Progress returns DB_INFO's P for a static content (-1 below 25%) and the
// number of chunks held. For a live stream it returns -1 and the count.
func (s *Store) Progress(name proto.HashName) (p int, count uint64, err error) {
	inf, err := s.lookup(name)
	if err != nil {
		return -1, 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if inf.live {
		return -1, inf.count, nil
	}
	return quarter(inf.count, inf.n), inf.count, nil
}

// Head returns the newest verified head of a live stream.
func (s *Store) Head(name proto.HashName) (content.Head, error) {
	inf, err := s.lookup(name)
	if err != nil {
		return content.Head{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return inf.head, nil
}

// LiveFloor returns the oldest chunk of a live stream the store still
// keeps or may yet get: its newest head's length less the kept windows
// (0 while the stream is shorter), or where the fetch jumped to
// (SkipLive), whichever is higher. A Reader asked for a chunk below it
// that the store does not hold fails with ErrEvicted.
func (s *Store) LiveFloor(name proto.HashName) (uint64, error) {
	inf, err := s.lookup(name)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.liveFloorLocked(inf), nil
}

func (s *Store) liveFloorLocked(inf *info) uint64 {
	if !inf.live {
		return 0
	}
	floor := inf.skipTo
	if keep := s.cfg.keepChunks(); inf.head.Length > keep {
		floor = max(floor, inf.head.Length-keep)
	}
	return floor
}

// SkipLive says that the fetch of a live stream jumped ahead to chunk to
// (it fell behind what the publisher keeps): the chunks below it that
// the store lacks will not come, and a Reader waiting for one fails with
// ErrEvicted instead of waiting for ever. It is kept in memory only.
func (s *Store) SkipLive(name proto.HashName, to uint64) error {
	inf, err := s.lookup(name)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if inf.live && to > inf.skipTo {
		inf.skipTo = to
		s.broadcastLocked()
	}
	return nil
}

// Have returns the have-bitmap of a content: bit i%64 of word i/64 is set
// when chunk i is stored. GroupChunks is 64, so a word is a record's bitmap.
func (s *Store) Have(name proto.HashName) ([]uint64, error) {
	inf, err := s.lookup(name)
	if err != nil {
		return nil, err
	}
	var words []uint64
	err = s.db.View(func(tx *bolt.Tx) error {
		cb := contentBucket(tx, inf.id)
		if cb == nil {
			return fmt.Errorf("%w: %v", ErrNotFound, name)
		}
		return cb.Bucket(bucketRecords).ForEach(func(k, v []byte) error {
			if len(k) != 8 || len(v) < 8 {
				return fmt.Errorf("%w: record key %x", ErrCorrupt, k)
			}
			r := binary.BigEndian.Uint64(k)
			if r > content.MaxChunks/GroupChunks {
				return fmt.Errorf("%w: record %d", ErrCorrupt, r)
			}
			for uint64(len(words)) <= r {
				words = append(words, 0)
			}
			words[r] = binary.BigEndian.Uint64(v)
			return nil
		})
	})
	return words, err
}

// recordLen is the size of record r.
func (inf *info) recordLen(r uint64) int {
	if inf.live {
		return 8 + 4*GroupChunks + GroupChunks*content.ChunkSize
	}
	slots := min(GroupChunks, inf.n-r*GroupChunks)
	return 8 + int(slots)*content.ChunkSize
}

// slotOffset is where slot k's chunk starts in a record.
func (inf *info) slotOffset(k uint64) int {
	if inf.live {
		return 8 + 4*GroupChunks + int(k)*content.ChunkSize
	}
	return 8 + int(k)*content.ChunkSize
}

// chunkLen is the length of chunk i.
func (inf *info) chunkLen(i uint64) int {
	if inf.live {
		return content.ChunkSize
	}
	return content.ChunkLen(inf.d.Size, i)
}

// fromRecord extracts chunk i from its record rec (aliasing it), or
// reports it absent.
func (inf *info) fromRecord(rec []byte, i uint64) (chunk []byte, ts uint32, ok bool, err error) {
	k := i % GroupChunks
	if len(rec) != inf.recordLen(i/GroupChunks) {
		return nil, 0, false, fmt.Errorf("%w: record %d of %v has %d bytes", ErrCorrupt, i/GroupChunks, inf.name, len(rec))
	}
	if binary.BigEndian.Uint64(rec)&(1<<k) == 0 || inf.chunkLen(i) == 0 {
		return nil, 0, false, nil // absent, or past a static content's end (a bad bitmap claims it)
	}
	off := inf.slotOffset(k)
	ts = uint32(inf.stamp.Timestamp)
	if inf.live {
		ts = binary.BigEndian.Uint32(rec[8+4*k:])
	}
	return rec[off : off+inf.chunkLen(i)], ts, true, nil
}

// Chunk returns chunk i (a copy) and the stamp to send in its DB_DATA.
func (s *Store) Chunk(name proto.HashName, i uint64) ([]byte, content.Stamp, error) {
	out, st, err := s.AppendChunks(nil, nil, name, i, i+1)
	if err != nil {
		return nil, content.Stamp{}, err
	}
	return out, st[0], nil
}

// AppendChunks appends chunks [lo, hi) to dst and the stamp to send with
// each to stamps, reading them in one transaction: what an ORDB serving a
// query wants. It fails with ErrMissing, appending nothing, if any chunk of
// the range is not stored.
func (s *Store) AppendChunks(dst []byte, stamps []content.Stamp, name proto.HashName, lo, hi uint64) ([]byte, []content.Stamp, error) {
	inf, err := s.lookup(name)
	if err != nil {
		return dst, stamps, err
	}
	if hi < lo {
		return dst, stamps, fmt.Errorf("%w: [%d, %d)", content.ErrBadRange, lo, hi)
	}
	n0, s0 := len(dst), len(stamps)
	var head content.Head
	if inf.live {
		s.mu.Lock()
		head = inf.head
		s.mu.Unlock()
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		cb := contentBucket(tx, inf.id)
		if cb == nil {
			return fmt.Errorf("%w: %v", ErrNotFound, name)
		}
		rb := cb.Bucket(bucketRecords)
		var rec []byte
		for i := lo; i < hi; i++ {
			if i == lo || i%GroupChunks == 0 {
				rec = rb.Get(u64(i / GroupChunks))
			}
			if rec == nil {
				return fmt.Errorf("%w: chunk %d of %v", ErrMissing, i, name)
			}
			c, ts, ok, err := inf.fromRecord(rec, i)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("%w: chunk %d of %v", ErrMissing, i, name)
			}
			dst = append(dst, c...)
			st := inf.stamp
			if inf.live {
				st = content.LiveStamp(ts, head)
			}
			stamps = append(stamps, st)
		}
		return nil
	})
	if err != nil {
		return dst[:n0], stamps[:s0], err
	}
	return dst, stamps, nil
}

// nodeFunc builds tree nodes from what the store holds: kept nodes first,
// then chunks, recursing into children.
func (inf *info) nodeFunc(cb *bolt.Bucket) content.NodeFunc {
	rb, nb := cb.Bucket(bucketRecords), cb.Bucket(bucketNodes)
	// The leaves of a span come from one record or two: look each up once
	// (a B-tree search per leaf was most of a proof's cost).
	var recKey uint64
	var rec []byte
	record := func(g uint64) []byte {
		if rec == nil || recKey != g {
			recKey, rec = g, rb.Get(u64(g))
		}
		return rec
	}
	var f content.NodeFunc
	f = func(a, b uint64) (content.Hash, error) {
		if v := nb.Get(nodeKey(a, b)); len(v) == content.HashSize {
			return content.Hash(v), nil
		}
		if b-a == 1 {
			rec := record(a / GroupChunks)
			if rec != nil {
				c, ts, ok, err := inf.fromRecord(rec, a)
				if err != nil {
					return content.Hash{}, err
				}
				if ok {
					if inf.live {
						return content.LiveLeafHash(ts, c), nil
					}
					return content.LeafHash(c), nil
				}
			}
			return content.Hash{}, fmt.Errorf("%w: chunk %d", content.ErrNoNode, a)
		}
		k := content.Split(b - a)
		l, err := f(a, a+k)
		if err != nil {
			return l, err
		}
		r, err := f(a+k, b)
		if err != nil {
			return r, err
		}
		return content.ParentHash(l, r), nil
	}
	return f
}

// Proof builds the proof for chunks [lo, hi) (against the newest head for a
// live stream). It fails with content.ErrNoNode when the store lacks a
// sibling it never learned.
func (s *Store) Proof(name proto.HashName, lo, hi uint64) (content.Proof, error) {
	return s.ProofFrom(name, lo, hi, 0)
}

// ProofFrom is Proof for a requester holding a live head of known chunks:
// when the newest head is longer, the proof also carries the consistency
// proof from known (if the store holds the nodes it needs; without it the
// requester refuses the longer head and asks elsewhere).
func (s *Store) ProofFrom(name proto.HashName, lo, hi, known uint64) (content.Proof, error) {
	inf, err := s.lookup(name)
	if err != nil {
		return content.Proof{}, err
	}
	var p content.Proof
	err = s.db.View(func(tx *bolt.Tx) error {
		cb := contentBucket(tx, inf.id)
		if cb == nil {
			return fmt.Errorf("%w: %v", ErrNotFound, name)
		}
		n := inf.n
		if inf.live {
			s.mu.Lock()
			p.Live, p.Head = true, inf.head
			s.mu.Unlock()
			n = p.Head.Length
		}
		nf := inf.nodeFunc(cb)
		hs, err := content.BuildProof(n, lo, hi, nf)
		p.Hashes = hs
		if err == nil && p.Live && known > 0 && known < n && lo != known {
			if c, cerr := content.ConsistencyProof(known, n, nf); cerr == nil {
				p.From, p.Consistency = known, c
			}
		}
		return err
	})
	if err != nil {
		return content.Proof{}, fmt.Errorf("chunkstore: proof [%d,%d) of %v: %w", lo, hi, name, err)
	}
	return p, nil
}

// Check re-verifies every stored chunk of a content against its root (the
// newest head for a live stream), one run of consecutive chunks at a time,
// using only what the store holds. It returns the chunks checked.
func (s *Store) Check(name proto.HashName) (uint64, error) {
	inf, err := s.lookup(name)
	if err != nil {
		return 0, err
	}
	have, err := s.Have(name)
	if err != nil {
		return 0, err
	}
	held := func(i uint64) bool { return i/64 < uint64(len(have)) && have[i/64]&(1<<(i%64)) != 0 }
	var checked uint64
	n := inf.n
	if inf.live {
		s.mu.Lock()
		n = inf.head.Length
		s.mu.Unlock()
	}
	for i := uint64(0); i < uint64(len(have))*64 && i < n; {
		if !held(i) {
			i++
			continue
		}
		j := i
		for j < n && j-i < 4096 && held(j) {
			j++
		}
		r := content.Range{Start: i}
		err := s.db.View(func(tx *bolt.Tx) error {
			cb := contentBucket(tx, inf.id)
			if cb == nil {
				return fmt.Errorf("%w: %v", ErrNotFound, name)
			}
			for k := i; k < j; k++ {
				c, ts, ok, err := inf.fromRecord(cb.Bucket(bucketRecords).Get(u64(k/GroupChunks)), k)
				if err != nil || !ok {
					return fmt.Errorf("%w: chunk %d vanished (%v)", ErrCorrupt, k, err)
				}
				r.Chunks = append(r.Chunks, bytes.Clone(c))
				r.Times = append(r.Times, ts)
			}
			return nil
		})
		if err != nil {
			return checked, err
		}
		if r.Proof, err = s.Proof(name, i, j); err != nil {
			return checked, err
		}
		if _, err := content.Verify(inf.d, name, r, 0); err != nil {
			return checked, fmt.Errorf("%w: chunks [%d,%d): %w", ErrCorrupt, i, j, err)
		}
		checked += j - i
		i = j
	}
	return checked, nil
}

// Names lists the hash_names of every content held.
func (s *Store) Names() ([]proto.HashName, error) {
	var out []proto.HashName
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNames).ForEach(func(k, _ []byte) error {
			if len(k) == proto.IDSize {
				out = append(out, proto.HashName(k))
			}
			return nil
		})
	})
	return out, err
}

// Delete removes a content and everything stored for it. Ranges still
// queued for it are dropped; readers waiting on it get ErrNotFound.
func (s *Store) Delete(name proto.HashName) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		idb := tx.Bucket(bucketNames).Get(name[:])
		if idb == nil {
			return fmt.Errorf("%w: %v", ErrNotFound, name)
		}
		id := bytes.Clone(idb)
		if err := tx.Bucket(bucketNames).Delete(name[:]); err != nil {
			return err
		}
		if tx.Bucket(bucketContent).Bucket(id) == nil {
			return nil // a damaged entry: dropping the name is all there is to do
		}
		return tx.Bucket(bucketContent).DeleteBucket(id)
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	if inf := s.infos[name]; inf != nil {
		inf.gone = true
		inf.queued = nil
		delete(s.infos, name)
	}
	s.broadcastLocked()
	s.mu.Unlock()
	return nil
}

// queuedChunk returns chunk i of a static content from the ranges queued
// for the writer, nil if none holds it. The slice is not written to.
func (s *Store) queuedChunk(inf *info, i uint64) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, or := range inf.queued[i/GroupChunks] {
		if c, _, ok, err := inf.fromRecord(or.buf, i); ok && err == nil {
			return c
		}
	}
	return nil
}

// broadcastLocked wakes every waiting reader. s.mu must be held.
func (s *Store) broadcastLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func popcount(v uint64) uint64 { return uint64(bits.OnesCount64(v)) }
