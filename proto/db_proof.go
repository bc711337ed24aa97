package proto

import (
	"encoding/binary"
	"fmt"
	"math"
)

// MaxProofSize bounds a DB_PROOF's proof: 128 SHA-256 hashes (the largest
// live proof with a consistency proof is 3,231 bytes).
const MaxProofSize = 128 * 32

// DBProof is veil's DB_PROOF message (relay command RelayDBProof). It
// precedes the DB_DATA it covers and carries what the requester needs to
// check chunks Chunk..Chunk+NbChunks-1 against the content's Merkle root:
//
//	[chunk nb 4B][nb chunks 4B][proof length 2B = 0..MaxProofSize][proof]
//
// The proof bytes are opaque here; chunkstore defines and checks them.
type DBProof struct {
	Chunk    uint32
	NbChunks uint32 // >= 1
	Proof    []byte // aliases the parsed buffer
}

// Command returns RelayDBProof.
func (DBProof) Command() RelayCommand { return RelayDBProof }

// Len is the encoded size.
func (m DBProof) Len() int { return 4 + 4 + 2 + len(m.Proof) }

// Append encodes m onto b. Fields are assumed valid (see Validate).
func (m DBProof) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, m.Chunk)
	b = binary.BigEndian.AppendUint32(b, m.NbChunks)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Proof)))
	return append(b, m.Proof...)
}

// Validate checks the chunk range and the proof size.
func (m DBProof) Validate() error {
	switch {
	case m.NbChunks == 0:
		return fmt.Errorf("db_proof: %w: no chunks", ErrBadValue)
	case uint64(m.Chunk)+uint64(m.NbChunks)-1 > math.MaxUint32:
		return fmt.Errorf("db_proof: %w: chunk %d + %d chunks overflows", ErrBadValue, m.Chunk, m.NbChunks)
	case len(m.Proof) > MaxProofSize:
		return fmt.Errorf("db_proof: %w: proof of %d bytes > %d", ErrTooLong, len(m.Proof), MaxProofSize)
	}
	return nil
}

// ParseDBProof decodes a DB_PROOF message. Proof aliases b.
func ParseDBProof(b []byte) (DBProof, error) {
	var m DBProof
	r := reader{b: b, what: "db_proof"}
	m.Chunk = r.uint32()
	m.NbChunks = r.uint32()
	n := int(r.uint16())
	if r.err == nil && n > MaxProofSize {
		r.fail(fmt.Errorf("db_proof: %w: proof of %d bytes > %d", ErrTooLong, n, MaxProofSize))
	}
	m.Proof = r.take(n)
	if err := r.end(); err != nil {
		return DBProof{}, err
	}
	if err := m.Validate(); err != nil {
		return DBProof{}, err
	}
	return m, nil
}
