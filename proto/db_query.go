package proto

import (
	"encoding/binary"
	"fmt"
)

// MaxCounter is the highest DB_QUERY hop counter. An ORDB receiving a query
// whose counter is MaxCounter answers DB_END instead of relaying it, which
// stops loops between ORDBs.
const MaxCounter = 5

// maxChunkNbSize is the longest chunk nb field: a uint32.
const maxChunkNbSize = 4

// DBQuery is the DB_QUERY ("GET") message. The Peersm fields come first,
// byte-exact; veil appends a request ID:
//
//	[hash_name length 1B = 20][hash_name 20B]          Peersm
//	[chunk nb length 1B = 0..4][chunk nb, big-endian,   Peersm
//	                            minimal: 0 is empty]
//	[nb chunks 2B][counter 1B = 0..5]                   Peersm
//	[request ID 8B]                                     veil
//	[known 8B, optional, nonzero]                       veil, live streams
//
// Chunk 0 with NbChunks 0 asks for the descriptor (DB_CONNECTED). The
// request ID lets an ORDB drop a query it has already relayed; requesters
// pick it at random and keep it when an ORDB relays the query. Known, for
// a live stream, is the length of the newest head the requester holds: an
// answer under a longer head then carries the consistency proof from it
// (MerkleProof's third kind), without which the requester refuses the
// longer head.
type DBQuery struct {
	HashName  HashName
	Chunk     uint32
	NbChunks  uint16
	Counter   uint8 // 0..MaxCounter
	RequestID uint64
	Known     uint64 // live: the requester's head length; 0: not sent
}

// Command returns RelayDBQuery.
func (DBQuery) Command() RelayCommand { return RelayDBQuery }

// WantsDescriptor reports whether q asks for the descriptor rather than data.
func (q DBQuery) WantsDescriptor() bool { return q.Chunk == 0 && q.NbChunks == 0 }

// Len is the encoded size.
func (q DBQuery) Len() int {
	n := 1 + IDSize + minimalUintLen(uint64(q.Chunk)) + 2 + 1 + 8
	if q.Known > 0 {
		n += 8
	}
	return n
}

// Append encodes q onto b. Fields are assumed valid (see Validate).
func (q DBQuery) Append(b []byte) []byte {
	b = appendHashName(b, q.HashName)
	b = appendMinimalUint(b, uint64(q.Chunk))
	b = binary.BigEndian.AppendUint16(b, q.NbChunks)
	b = append(b, q.Counter)
	b = binary.BigEndian.AppendUint64(b, q.RequestID)
	if q.Known > 0 {
		b = binary.BigEndian.AppendUint64(b, q.Known)
	}
	return b
}

// Validate checks field values.
func (q DBQuery) Validate() error {
	if q.Counter > MaxCounter {
		return fmt.Errorf("db_query: %w: counter %d > %d", ErrBadValue, q.Counter, MaxCounter)
	}
	return nil
}

// ParseDBQuery decodes a DB_QUERY message.
func ParseDBQuery(b []byte) (DBQuery, error) {
	var q DBQuery
	r := reader{b: b, what: "db_query"}
	q.HashName = parseHashName(&r)
	q.Chunk = uint32(r.minimalUint(maxChunkNbSize, "chunk nb"))
	q.NbChunks = r.uint16()
	q.Counter = r.byte()
	q.RequestID = r.uint64()
	if r.err == nil && len(r.b) > 0 {
		if q.Known = r.uint64(); r.err == nil && q.Known == 0 {
			r.fail(fmt.Errorf("db_query: %w: known length 0 sent", ErrBadValue))
		}
	}
	if err := r.end(); err != nil {
		return DBQuery{}, err
	}
	if err := q.Validate(); err != nil {
		return DBQuery{}, err
	}
	return q, nil
}
