package ordb

import (
	"errors"
	"fmt"

	"veil/chunkstore"
	"veil/chunkstore/content"
	"veil/proto"
)

// DefaultMaxChunks bounds the chunks one DB_QUERY may ask for: 64 chunks
// (~31 KiB) keep one answer's DB_DATA within a few dozen cells.
const DefaultMaxChunks = 64

// Server answers DB_QUERY from the contents its store holds.
type Server struct {
	Store *chunkstore.Store
	// MaxChunks bounds the chunks served per query; 0 means DefaultMaxChunks.
	// A larger query is answered with its first MaxChunks chunks.
	MaxChunks int
}

// Serve answers the queries of one stream until the stream ends or the peer
// breaks the protocol; it closes the stream before returning. The
// requester's DB_END, io.EOF or a closed stream is a normal end and
// returns nil.
func (srv *Server) Serve(s CellStream) error {
	defer s.Close()
	c := newMsgConn(s)
	var bufs serveBufs
	// What a server receives (DB_QUERY, DB_END) fits one cell: refusing
	// longer messages keeps a stream from making us buffer up to
	// proto.MaxDBMessage.
	c.Asm.Max = proto.DBFirstFrameData
	for {
		cmd, msg, err := c.recv()
		if err != nil {
			if errors.Is(err, ErrProtocol) {
				return err
			}
			return nil
		}
		if cmd == proto.RelayDBEnd {
			return nil // the requester is done
		}
		if cmd != proto.RelayDBQuery {
			return fmt.Errorf("%w: %v where DB_QUERY was expected", ErrProtocol, cmd)
		}
		q, err := proto.ParseDBQuery(msg)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		if err := srv.answer(c, &bufs, q); err != nil {
			return err
		}
	}
}

// answer sends the reply to one query: the descriptor, proved chunks, or
// DB_END UNAVAILABLE.
func (srv *Server) answer(c *msgConn, b *serveBufs, q proto.DBQuery) error {
	unavailable := func() error { return c.send(proto.DBEnd{Reason: proto.DBEndUnavailable}) }
	if q.Counter >= proto.MaxCounter {
		return unavailable() // the Peersm specification's loop breaker
	}
	d, err := srv.Store.Descriptor(q.HashName)
	if err != nil {
		return unavailable()
	}
	if q.WantsDescriptor() {
		return c.send(d)
	}
	lo, hi, ok := srv.clamp(d, q)
	if !ok {
		return unavailable()
	}
	data, stamps, err := srv.Store.AppendChunks(b.data[:0], b.stamps[:0], q.HashName, lo, hi)
	b.data, b.stamps = data, stamps
	if err != nil {
		return unavailable()
	}
	// One DB_PROOF + DB_DATA pair per run of chunks sharing a stamp (all of
	// a static content's chunks do; a live stream's change each second).
	for start := lo; start < hi; {
		end := start + 1
		for end < hi && stamps[end-lo] == stamps[start-lo] {
			end++
		}
		p, err := srv.Store.ProofFrom(q.HashName, start, end, q.Known)
		if err != nil {
			return unavailable()
		}
		st := stamps[start-lo]
		if err := c.send(proto.DBProof{Chunk: uint32(start), NbChunks: uint32(end - start), Proof: p.Append(nil)}); err != nil {
			return err
		}
		run := data[(start-lo)*proto.ChunkSize : min(uint64(len(data)), (end-lo)*proto.ChunkSize)]
		if err := c.send(proto.DBData{Chunk: uint32(start), Timestamp: st.Timestamp, Tag: st.Tag, Data: run}); err != nil {
			return err
		}
		start = end
	}
	return nil
}

// serveBufs are one stream's scratch buffers, reused from query to query.
type serveBufs struct {
	data   []byte
	stamps []content.Stamp
}

// clamp turns a query into the chunk range [lo, hi) to serve.
func (srv *Server) clamp(d proto.DBConnected, q proto.DBQuery) (lo, hi uint64, ok bool) {
	max := uint64(srv.MaxChunks)
	if max == 0 {
		max = DefaultMaxChunks
	}
	lo, n := uint64(q.Chunk), min(uint64(q.NbChunks), max)
	if n == 0 {
		return 0, 0, false
	}
	if d.Flags&proto.FlagLive == 0 {
		count := content.ChunkCount(d.Size)
		if lo >= count {
			return 0, 0, false
		}
		return lo, min(lo+n, count), true
	}
	// A live stream: what is appended so far, so that a query reaching
	// past the newest chunk is answered up to it (its rest is asked
	// again) instead of not at all.
	h, err := srv.Store.Head(q.HashName)
	if err != nil || lo >= h.Length {
		return 0, 0, false
	}
	return lo, min(lo+n, h.Length), true
}
