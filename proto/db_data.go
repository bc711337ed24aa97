package proto

import (
	"encoding/binary"
	"fmt"
	"math"
)

// DBDataHeaderSize is the size of a DB_DATA message before its data.
const DBDataHeaderSize = 4 + 8

// MaxDBDataChunks is the most chunks one DB_DATA message can carry within
// MaxDBMessage.
const MaxDBDataChunks = (MaxDBMessage - DBDataHeaderSize) / ChunkSize

// DBData is the DB_DATA answer, byte-exact as the Peersm specification
// gives it:
//
//	[chunk nb 4B][signature 8B = timestamp 4B + tag 4B][data]
//
// Data is one or more consecutive ChunkSize-byte chunks starting at chunk
// Chunk; only the last chunk of the content may be shorter. The Peersm
// 8-byte "signature" is split as veil uses it: Timestamp (unix seconds, for
// live streams and the sliding window) and Tag, 4 bytes the content layer
// may use (zero otherwise). Chunks are checked against the content's Merkle
// root with the DB_PROOF that precedes them, not with this field.
type DBData struct {
	Chunk     uint32
	Timestamp uint32
	Tag       [4]byte
	Data      []byte // aliases the parsed buffer
}

// Command returns RelayDBData.
func (DBData) Command() RelayCommand { return RelayDBData }

// Len is the encoded size.
func (m DBData) Len() int { return DBDataHeaderSize + len(m.Data) }

// Append encodes m onto b. Fields are assumed valid (see Validate).
func (m DBData) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, m.Chunk)
	b = binary.BigEndian.AppendUint32(b, m.Timestamp)
	b = append(b, m.Tag[:]...)
	return append(b, m.Data...)
}

// NbChunks is the number of chunks in Data (the last may be short).
func (m DBData) NbChunks() int { return (len(m.Data) + ChunkSize - 1) / ChunkSize }

// ChunkData returns the i-th chunk of Data (0 <= i < NbChunks()); it is
// chunk number Chunk+i of the content.
func (m DBData) ChunkData(i int) []byte {
	lo := i * ChunkSize
	return m.Data[lo:min(lo+ChunkSize, len(m.Data))]
}

// Validate checks that Data is non-empty, fits MaxDBMessage, and that its
// chunk numbers do not overflow.
func (m DBData) Validate() error {
	switch {
	case len(m.Data) == 0:
		return fmt.Errorf("db_data: %w: no data", ErrBadLength)
	case m.Len() > MaxDBMessage:
		return fmt.Errorf("db_data: %w: %d bytes > %d", ErrTooLong, m.Len(), MaxDBMessage)
	case uint64(m.Chunk)+uint64(m.NbChunks())-1 > math.MaxUint32:
		return fmt.Errorf("db_data: %w: chunk %d + %d chunks overflows", ErrBadValue, m.Chunk, m.NbChunks())
	}
	return nil
}

// ParseDBData decodes a DB_DATA message without allocating. Data aliases b.
func ParseDBData(b []byte) (DBData, error) {
	if len(b) > MaxDBMessage {
		return DBData{}, fmt.Errorf("db_data: %w: %d bytes > %d", ErrTooLong, len(b), MaxDBMessage)
	}
	if len(b) < DBDataHeaderSize {
		return DBData{}, fmt.Errorf("db_data: %w (%d bytes)", ErrTruncated, len(b))
	}
	m := DBData{
		Chunk:     binary.BigEndian.Uint32(b),
		Timestamp: binary.BigEndian.Uint32(b[4:]),
		Tag:       [4]byte(b[8:12]),
		Data:      b[DBDataHeaderSize:len(b):len(b)],
	}
	if len(m.Data) == 0 {
		return DBData{}, fmt.Errorf("db_data: %w: no data", ErrTruncated)
	}
	if err := m.Validate(); err != nil {
		return DBData{}, err
	}
	return m, nil
}
