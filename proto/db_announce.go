package proto

import (
	"encoding/binary"
	"fmt"
)

// AnnounceLive is the DBAnnounce flag of a continuous stream.
const AnnounceLive = 1 << 0

// DBAnnounce is veil's DB_ANNOUNCE (relay command RelayDBAnnounce): an ORDB
// tells a neighbour ORDB that it can reach a content, the Peersm
// specification's ['abcd', size, type] sent between ORDBs:
//
//	[hash_name length 1B = 20][hash_name 20B]
//	[size length 1B = 0..8][size, big-endian, minimal: 0 is empty]
//	[type length 1B][type]
//	[flags 1B: bit 0 live, other bits 0]
//
// Size and Type are zero while the ORDB has not seen a verified
// descriptor; a receiver uses them for display only.
type DBAnnounce struct {
	HashName HashName
	Size     uint64
	Type     string
	Live     bool
}

// Command returns RelayDBAnnounce.
func (DBAnnounce) Command() RelayCommand { return RelayDBAnnounce }

// Len is the encoded size.
func (m DBAnnounce) Len() int { return 1 + IDSize + minimalUintLen(m.Size) + 1 + len(m.Type) + 1 }

// Append encodes m onto b. Fields are assumed valid (see Validate).
func (m DBAnnounce) Append(b []byte) []byte {
	b = appendHashName(b, m.HashName)
	b = appendMinimalUint(b, m.Size)
	b = append(b, byte(len(m.Type)))
	b = append(b, m.Type...)
	var f byte
	if m.Live {
		f = AnnounceLive
	}
	return append(b, f)
}

// Validate checks the type's length.
func (m DBAnnounce) Validate() error {
	if len(m.Type) > MaxMIMEType {
		return fmt.Errorf("db_announce: %w: type of %d bytes", ErrTooLong, len(m.Type))
	}
	return nil
}

// ParseDBAnnounce decodes a DB_ANNOUNCE message. Type aliases b.
func ParseDBAnnounce(b []byte) (DBAnnounce, error) {
	var m DBAnnounce
	r := reader{b: b, what: "db_announce"}
	m.HashName = parseHashName(&r)
	m.Size = r.minimalUint(8, "size")
	m.Type = string(r.lenPrefixed(MaxMIMEType))
	f := r.byte()
	if r.err == nil && f&^AnnounceLive != 0 {
		r.fail(fmt.Errorf("db_announce: %w: flags %#x", ErrBadValue, f))
	}
	m.Live = f&AnnounceLive != 0
	if err := r.end(); err != nil {
		return DBAnnounce{}, err
	}
	return m, nil
}

// DBStreamInfo is veil's DB_STREAM_INFO (relay command RelayDBStreamInfo):
// a peer tells its ORDB which chunks of a live stream it holds, for the
// Peersm specification's OR_streams_P lists:
//
//	[hash_name length 1B = 20][hash_name 20B]
//	[first chunk 8B][last chunk 8B, >= first]
//	[type length 1B][type]
type DBStreamInfo struct {
	HashName    HashName
	First, Last uint64
	Type        string
}

// Command returns RelayDBStreamInfo.
func (DBStreamInfo) Command() RelayCommand { return RelayDBStreamInfo }

// Len is the encoded size.
func (m DBStreamInfo) Len() int { return 1 + IDSize + 16 + 1 + len(m.Type) }

// Append encodes m onto b. Fields are assumed valid (see Validate).
func (m DBStreamInfo) Append(b []byte) []byte {
	b = appendHashName(b, m.HashName)
	b = binary.BigEndian.AppendUint64(b, m.First)
	b = binary.BigEndian.AppendUint64(b, m.Last)
	b = append(b, byte(len(m.Type)))
	return append(b, m.Type...)
}

// Validate checks the range and the type's length.
func (m DBStreamInfo) Validate() error {
	if m.First > m.Last {
		return fmt.Errorf("db_stream_info: %w: first %d > last %d", ErrBadValue, m.First, m.Last)
	}
	if len(m.Type) > MaxMIMEType {
		return fmt.Errorf("db_stream_info: %w: type of %d bytes", ErrTooLong, len(m.Type))
	}
	return nil
}

// ParseDBStreamInfo decodes a DB_STREAM_INFO message.
func ParseDBStreamInfo(b []byte) (DBStreamInfo, error) {
	var m DBStreamInfo
	r := reader{b: b, what: "db_stream_info"}
	m.HashName = parseHashName(&r)
	m.First = r.uint64()
	m.Last = r.uint64()
	m.Type = string(r.lenPrefixed(MaxMIMEType))
	if err := r.end(); err != nil {
		return DBStreamInfo{}, err
	}
	if err := m.Validate(); err != nil {
		return DBStreamInfo{}, err
	}
	return m, nil
}

// DBLiveStart is veil's DB_LIVE_START (relay command RelayDBLiveStart):
// sent just before the DB_CONNECTED answering a live stream's descriptor
// query, it tells the requester the chunk to start from (two windows
// behind the newest chunk the ORDB knows of, as the Peersm specification
// has it):
//
//	[chunk 8B]
type DBLiveStart struct {
	Chunk uint64
}

// Command returns RelayDBLiveStart.
func (DBLiveStart) Command() RelayCommand { return RelayDBLiveStart }

// Len is the encoded size.
func (DBLiveStart) Len() int { return 8 }

// Append encodes m onto b.
func (m DBLiveStart) Append(b []byte) []byte { return binary.BigEndian.AppendUint64(b, m.Chunk) }

// ParseDBLiveStart decodes a DB_LIVE_START message.
func ParseDBLiveStart(b []byte) (DBLiveStart, error) {
	r := reader{b: b, what: "db_live_start"}
	m := DBLiveStart{Chunk: r.uint64()}
	if err := r.end(); err != nil {
		return DBLiveStart{}, err
	}
	return m, nil
}
