package ordb

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"

	"veil/chunkstore"
	"veil/chunkstore/content"
	"veil/proto"
)

// FetchConfig tunes Fetch. The zero value takes the defaults.
type FetchConfig struct {
	// ChunksPerQuery is the chunks asked per DB_QUERY (default 64, ~31 KiB:
	// the store keeps the tree's nodes over 64 aligned chunks, so the
	// proof of such a range is read, not computed from the chunks around
	// it).
	ChunksPerQuery int
	// InFlight is how many queries may await their answer (default 8), so
	// the circuit stays busy while answers are verified and stored.
	InFlight int
	// Progress, if set, is called after each stored range with the chunks
	// held and the total.
	Progress func(held, total uint64)
	// Rand draws the queries' request IDs; Fetch owns it while it runs
	// (nil: a generator seeded from crypto/rand). Seed it for a
	// reproducible exchange.
	Rand *rand.Rand
}

func (c FetchConfig) withDefaults() FetchConfig {
	if c.ChunksPerQuery <= 0 {
		c.ChunksPerQuery = DefaultMaxChunks
	}
	c.ChunksPerQuery = min(c.ChunksPerQuery, DefaultMaxChunks)
	if c.InFlight <= 0 {
		c.InFlight = 8
	}
	if c.Rand == nil {
		var seed [32]byte
		crand.Read(seed[:]) // never fails (crypto/rand panics rather)
		c.Rand = rand.New(rand.NewChaCha8(seed))
	}
	return c
}

// Fetch pulls the static content name over one stream into store: the
// descriptor first (checked to hash to name and to be signed by its
// publisher), then every chunk the store lacks, each range verified against
// the Merkle root before it is stored. A content partly held is resumed.
// It returns the descriptor once every chunk is on disk. Fetch closes s.
func Fetch(ctx context.Context, s CellStream, name proto.HashName, store *chunkstore.Store, cfg FetchConfig) (proto.DBConnected, error) {
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { <-ctx.Done(); s.Close() }() // unblocks ReadCell on cancel

	c := newMsgConn(s)
	query := proto.DBQuery{HashName: name, RequestID: cfg.Rand.Uint64()}
	if err := c.send(query); err != nil {
		return proto.DBConnected{}, err
	}
	d, err := recvDescriptor(c, name)
	if err != nil {
		return d, ctxErr(ctx, err)
	}
	if d.Flags&proto.FlagLive != 0 {
		return d, fmt.Errorf("ordb: %v is a live stream; Fetch takes static content", name)
	}
	if _, err := store.PutDescriptor(d); err != nil {
		return d, fmt.Errorf("storing descriptor: %w", err)
	}
	total := content.ChunkCount(d.Size)
	have, err := store.Have(name)
	if err != nil {
		return d, err
	}
	// Ranges are found as they are needed, never listed whole: a content
	// may have up to content.MaxChunks chunks.
	gaps := gapFinder{have: have, total: total, per: uint64(cfg.ChunksPerQuery)}
	held := countHeld(have, total)

	// Answers come in query order on the one stream: pending holds the
	// ranges asked, oldest first; retry the rests of short answers.
	var pending, retry [][2]uint64
	for {
		for len(pending) < cfg.InFlight {
			var r [2]uint64
			if len(retry) > 0 {
				r, retry = retry[0], retry[1:]
			} else if lo, hi, ok := gaps.next(); ok {
				r = [2]uint64{lo, hi}
			} else {
				break
			}
			query.Chunk, query.NbChunks, query.RequestID = uint32(r[0]), uint16(r[1]-r[0]), cfg.Rand.Uint64()
			if err := c.send(query); err != nil {
				return d, ctxErr(ctx, err)
			}
			pending = append(pending, r)
		}
		if len(pending) == 0 {
			break
		}
		want := pending[0]
		pending = pending[1:]
		n, err := recvRange(ctx, c, name, store, want)
		if err != nil {
			return d, ctxErr(ctx, err)
		}
		if want[0]+n < want[1] {
			// The ORDB serves fewer chunks per query than we asked for.
			retry = append(retry, [2]uint64{want[0] + n, want[1]})
		}
		held += n
		if cfg.Progress != nil {
			cfg.Progress(held, total)
		}
	}
	if err := store.Flush(ctx); err != nil {
		return d, err
	}
	_ = c.send(proto.DBEnd{Reason: proto.DBEndFinished})
	return d, nil
}

// recvDescriptor reads the answer to a descriptor query and checks it.
func recvDescriptor(c *msgConn, name proto.HashName) (proto.DBConnected, error) {
	cmd, msg, err := c.recv()
	if err != nil {
		return proto.DBConnected{}, fmt.Errorf("reading descriptor: %w", err)
	}
	switch cmd {
	case proto.RelayDBEnd:
		return proto.DBConnected{}, fmt.Errorf("%w: %v", ErrUnavailable, name)
	case proto.RelayDBConnected:
	default:
		return proto.DBConnected{}, fmt.Errorf("%w: %v where DB_CONNECTED was expected", ErrProtocol, cmd)
	}
	d, err := proto.ParseDBConnected(msg)
	if err != nil {
		return d, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	d.PublicKey, d.Root, d.Signature = clone(d.PublicKey), clone(d.Root), clone(d.Signature)
	if content.HashNameOf(d) != name {
		return d, ErrMismatch
	}
	if err := content.CheckDescriptor(d); err != nil {
		return d, err
	}
	return d, nil
}

// recvRange reads one DB_PROOF + DB_DATA answer to the query for chunks
// [want[0], want[1]), verifies and stores it, and returns the chunks it
// held. The answer must start at want[0] and may stop short of want[1].
func recvRange(ctx context.Context, c *msgConn, name proto.HashName, store *chunkstore.Store, want [2]uint64) (uint64, error) {
	cmd, msg, err := c.recv()
	if err != nil {
		return 0, fmt.Errorf("reading proof: %w", err)
	}
	switch cmd {
	case proto.RelayDBEnd:
		return 0, fmt.Errorf("%w: the ORDB lacks chunks of %v", ErrUnavailable, name)
	case proto.RelayDBProof:
	default:
		return 0, fmt.Errorf("%w: %v where DB_PROOF was expected", ErrProtocol, cmd)
	}
	pm, err := proto.ParseDBProof(msg)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	proof, err := content.ParseProof(pm.Proof) // copies
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	cmd, msg, err = c.recv()
	if err != nil {
		return 0, fmt.Errorf("reading data: %w", err)
	}
	if cmd != proto.RelayDBData {
		return 0, fmt.Errorf("%w: %v where DB_DATA was expected", ErrProtocol, cmd)
	}
	dm, err := proto.ParseDBData(msg)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	if dm.Chunk != pm.Chunk || uint32(dm.NbChunks()) != pm.NbChunks {
		return 0, fmt.Errorf("%w: DB_DATA covers %d+%d, its proof %d+%d", ErrProtocol, dm.Chunk, dm.NbChunks(), pm.Chunk, pm.NbChunks)
	}
	if uint64(dm.Chunk) != want[0] || uint64(dm.NbChunks()) > want[1]-want[0] {
		return 0, fmt.Errorf("%w: answer covers %d+%d, query asked %d+%d", ErrProtocol, dm.Chunk, dm.NbChunks(), want[0], want[1]-want[0])
	}
	r := content.Range{Start: uint64(dm.Chunk), Proof: proof}
	for i := range dm.NbChunks() {
		r.Chunks = append(r.Chunks, dm.ChunkData(i))
	}
	if err := store.Ingest(ctx, name, r); err != nil {
		return 0, fmt.Errorf("chunks %d+%d: %w", dm.Chunk, len(r.Chunks), err)
	}
	return uint64(len(r.Chunks)), nil
}

// gapFinder yields, in order, the runs of chunks of [0, total) not in the
// have-bitmap, each at most per long.
type gapFinder struct {
	have       []uint64
	total, per uint64
	i          uint64 // next chunk to look at
}

func (g *gapFinder) held(i uint64) bool {
	w := i / 64
	return w < uint64(len(g.have)) && g.have[w]&(1<<(i%64)) != 0
}

// next returns the next run [lo, hi), or ok false when none is left.
func (g *gapFinder) next() (lo, hi uint64, ok bool) {
	for g.i < g.total && g.held(g.i) {
		g.i++
	}
	if g.i >= g.total {
		return 0, 0, false
	}
	lo = g.i
	for g.i < g.total && g.i-lo < g.per && !g.held(g.i) {
		g.i++
	}
	return lo, g.i, true
}

// countHeld counts the chunks of [0, total) set in have.
func countHeld(have []uint64, total uint64) uint64 {
	var n uint64
	for w, word := range have {
		lo := uint64(w) * 64
		if lo >= total {
			break
		}
		if total-lo < 64 {
			word &= 1<<(total-lo) - 1
		}
		n += uint64(bits.OnesCount64(word))
	}
	return n
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// ctxErr prefers the context's error when the stream failed because the
// context ended.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil && !errors.Is(err, ErrProtocol) {
		return ctx.Err()
	}
	return err
}
