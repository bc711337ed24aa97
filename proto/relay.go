package proto

import (
	"encoding/binary"
	"fmt"
)

// RelayCommand is the command of a relay cell (Tor numbering for Tor's
// commands; veil's DB_* family from 40 on).
type RelayCommand uint8

// Relay commands.
const (
	RelayBegin     RelayCommand = 1
	RelayData      RelayCommand = 2
	RelayEnd       RelayCommand = 3
	RelayConnected RelayCommand = 4
	RelaySendme    RelayCommand = 5
	RelayTruncate  RelayCommand = 8
	RelayTruncated RelayCommand = 9
	RelayDrop      RelayCommand = 10
	RelayExtend2   RelayCommand = 14
	RelayExtended2 RelayCommand = 15

	RelayDBQuery     RelayCommand = 40
	RelayDBConnected RelayCommand = 41
	RelayDBData      RelayCommand = 42
	RelayDBInfo      RelayCommand = 43
	RelayDBFindPeer  RelayCommand = 44
	RelayDBFoundPeer RelayCommand = 45
	RelayDBEnd       RelayCommand = 46
	// RelayDBMore continues a DB_* message that did not fit in one cell.
	RelayDBMore RelayCommand = 47
	// RelayDBProof carries the Merkle proof for the DB_DATA that follows.
	RelayDBProof RelayCommand = 48
	// RelayDBAnnounce: an ORDB tells a neighbour ORDB what it can reach.
	RelayDBAnnounce RelayCommand = 49
	// RelayDBStreamInfo: a peer tells its ORDB which live chunks it holds.
	RelayDBStreamInfo RelayCommand = 50
	// RelayDBLiveStart: where a live stream's requester should start.
	RelayDBLiveStart RelayCommand = 51
)

var relayNames = [256]string{
	RelayBegin: "BEGIN", RelayData: "DATA", RelayEnd: "END", RelayConnected: "CONNECTED",
	RelaySendme: "SENDME", RelayTruncate: "TRUNCATE", RelayTruncated: "TRUNCATED",
	RelayDrop: "DROP", RelayExtend2: "EXTEND2", RelayExtended2: "EXTENDED2",
	RelayDBQuery: "DB_QUERY", RelayDBConnected: "DB_CONNECTED", RelayDBData: "DB_DATA",
	RelayDBInfo: "DB_INFO", RelayDBFindPeer: "DB_FIND_PEER", RelayDBFoundPeer: "DB_FOUND_PEER",
	RelayDBEnd: "DB_END", RelayDBMore: "DB_MORE", RelayDBProof: "DB_PROOF",
	RelayDBAnnounce: "DB_ANNOUNCE", RelayDBStreamInfo: "DB_STREAM_INFO", RelayDBLiveStart: "DB_LIVE_START",
}

// Known reports whether c is a relay command veil understands.
func (c RelayCommand) Known() bool { return relayNames[c] != "" }

// IsDB reports whether c belongs to the DB_* family.
func (c RelayCommand) IsDB() bool { return c >= RelayDBQuery && c <= RelayDBLiveStart }

func (c RelayCommand) String() string {
	if n := relayNames[c]; n != "" {
		return n
	}
	return fmt.Sprintf("RELAY_CMD(%d)", uint8(c))
}

// Relay header offsets inside a cell payload:
//
//	Command 1 | Recognized 2 | StreamID 2 | Digest 4 | Length 2 | Data 498
const (
	relayOffCmd    = 0
	relayOffRecog  = 1
	relayOffStream = 3
	relayOffDigest = 5
	relayOffLen    = 9
	relayOffData   = RelayHeaderSize
)

// Offsets of the fields the per-hop crypto reads and writes in place in an
// encrypted relay payload, where no RelayCell can be parsed yet.
const (
	// RelayRecognizedOffset is where the 2-byte Recognized field starts.
	RelayRecognizedOffset = relayOffRecog
	// RelayDigestOffset is where the DigestSize-byte Digest field starts.
	RelayDigestOffset = relayOffDigest
)

// RelayHeader is the decoded header of a relay cell payload.
type RelayHeader struct {
	Command    RelayCommand
	Recognized uint16
	StreamID   uint16
	Digest     [DigestSize]byte
	Length     uint16
}

// RelayCell is the plaintext view of a relay cell's 509-byte payload. The
// zero value is an empty relay cell.
type RelayCell struct {
	RelayHeader
	Data []byte // at most RelayDataSize bytes
}

// Len is the encoded size: always a whole cell payload.
func (r RelayCell) Len() int { return CellPayloadSize }

// Append encodes r as a full 509-byte payload (data zero-padded). The
// Length field is taken from len(r.Data); a Data longer than RelayDataSize
// is a programming error and panics.
func (r RelayCell) Append(b []byte) []byte {
	if len(r.Data) > RelayDataSize {
		panic("proto: relay data over 498 bytes")
	}
	start := len(b)
	b = append(b, make([]byte, CellPayloadSize)...)
	r.Length = uint16(len(r.Data))
	r.RelayHeader.put(b[start:])
	copy(b[start+relayOffData:], r.Data)
	return b
}

func (h RelayHeader) put(p []byte) {
	p[relayOffCmd] = byte(h.Command)
	binary.BigEndian.PutUint16(p[relayOffRecog:], h.Recognized)
	binary.BigEndian.PutUint16(p[relayOffStream:], h.StreamID)
	copy(p[relayOffDigest:relayOffDigest+DigestSize], h.Digest[:])
	binary.BigEndian.PutUint16(p[relayOffLen:], h.Length)
}

// PutRelay writes a relay header and data into a cell payload in place,
// zeroing the unused tail (Tor pads with zeros; the tail is covered by the
// digest). It returns an error instead of panicking when data is too long.
func PutRelay(p *[CellPayloadSize]byte, h RelayHeader, data []byte) error {
	if len(data) > RelayDataSize {
		return fmt.Errorf("relay cell: %w (%d > %d)", ErrTooLong, len(data), RelayDataSize)
	}
	h.Length = uint16(len(data))
	h.put(p[:])
	n := copy(p[relayOffData:], data)
	clear(p[relayOffData+n:])
	return nil
}

// ParseRelay decodes a 509-byte relay payload. Data aliases p.
func ParseRelay(p []byte) (RelayCell, error) {
	var r RelayCell
	if len(p) < CellPayloadSize {
		return r, fmt.Errorf("relay cell: %w (%d of %d bytes)", ErrTruncated, len(p), CellPayloadSize)
	}
	if len(p) > CellPayloadSize {
		return r, fmt.Errorf("relay cell: %w", ErrTrailing)
	}
	r.Command = RelayCommand(p[relayOffCmd])
	r.Recognized = binary.BigEndian.Uint16(p[relayOffRecog:])
	r.StreamID = binary.BigEndian.Uint16(p[relayOffStream:])
	copy(r.Digest[:], p[relayOffDigest:])
	r.Length = binary.BigEndian.Uint16(p[relayOffLen:])
	if !r.Command.Known() {
		return r, fmt.Errorf("relay cell: %w %v", ErrUnknownCommand, r.Command)
	}
	if int(r.Length) > RelayDataSize {
		return r, fmt.Errorf("relay cell: %w: length %d > %d", ErrBadLength, r.Length, RelayDataSize)
	}
	r.Data = p[relayOffData : relayOffData+int(r.Length)]
	return r, nil
}

// DestroyReason says why a circuit was torn down (DESTROY cell payload byte 0,
// Tor numbering).
type DestroyReason uint8

// Destroy reasons.
const (
	DestroyNone          DestroyReason = 0
	DestroyProtocol      DestroyReason = 1
	DestroyInternal      DestroyReason = 2
	DestroyRequested     DestroyReason = 3
	DestroyHibernating   DestroyReason = 4
	DestroyResourceLimit DestroyReason = 5
	DestroyConnectFailed DestroyReason = 6
	DestroyORIdentity    DestroyReason = 7
	DestroyChannelClosed DestroyReason = 8
	DestroyFinished      DestroyReason = 9
	DestroyTimeout       DestroyReason = 10
	DestroyDestroyed     DestroyReason = 11
	DestroyNoSuchService DestroyReason = 12
	maxDestroyReason                   = DestroyNoSuchService
)

var destroyNames = [...]string{"NONE", "PROTOCOL", "INTERNAL", "REQUESTED", "HIBERNATING",
	"RESOURCELIMIT", "CONNECTFAILED", "OR_IDENTITY", "CHANNEL_CLOSED", "FINISHED",
	"TIMEOUT", "DESTROYED", "NOSUCHSERVICE"}

func (r DestroyReason) String() string {
	if r <= maxDestroyReason {
		return destroyNames[r]
	}
	return fmt.Sprintf("REASON(%d)", uint8(r))
}

// ParseDestroy returns the reason carried by a DESTROY cell payload.
func ParseDestroy(p []byte) (DestroyReason, error) {
	if len(p) < 1 {
		return 0, fmt.Errorf("destroy: %w", ErrTruncated)
	}
	r := DestroyReason(p[0])
	if r > maxDestroyReason {
		return r, fmt.Errorf("destroy: %w: reason %d", ErrBadValue, r)
	}
	return r, nil
}
