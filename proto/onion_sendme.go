package proto

import (
	"encoding/binary"
	"fmt"
)

// SENDME sizes and versions.
const (
	// SendmeTagSize is the full GMAC tag of a relay cell; the cell carries
	// its first DigestSize bytes, an authenticated SENDME carries all of it.
	SendmeTagSize = 16
	// SendmeVersionTag is the SENDME body version that carries a tag.
	SendmeVersionTag = 1
	// SendmeHeaderSize is the version and the data length.
	SendmeHeaderSize = 1 + 2
	// MaxSendmeData keeps a SENDME inside one relay cell.
	MaxSendmeData = RelayDataSize - SendmeHeaderSize
)

// Sendme is the data of a SENDME relay cell. Version 0 with no data is
// encoded as no bytes at all (Tor's legacy form, used at stream level);
// anything else as
//
//	[version 1B][data length 2B][data]
type Sendme struct {
	Version uint8
	Data    []byte // version 1: the SendmeTagSize-byte tag of the triggering cell
}

// ParseSendme decodes SENDME relay data exactly. Empty data is a version 0
// SENDME. Data aliases b.
func ParseSendme(b []byte) (Sendme, error) {
	if len(b) == 0 {
		return Sendme{}, nil
	}
	r := reader{b: b, what: "sendme"}
	var s Sendme
	s.Version = r.byte()
	n := int(r.uint16())
	if r.err == nil && n > MaxSendmeData {
		r.fail(fmt.Errorf("sendme: %w: data length %d > %d", ErrTooLong, n, MaxSendmeData))
	}
	s.Data = r.take(n)
	if err := r.end(); err != nil {
		return Sendme{}, err
	}
	if s.Version == 0 && len(s.Data) == 0 {
		// It would encode back as the empty body: not canonical.
		return Sendme{}, fmt.Errorf("sendme: %w: empty version 0 must be encoded as no bytes", ErrBadValue)
	}
	return s, nil
}

// Len is the encoded size.
func (s Sendme) Len() int {
	if s.Version == 0 && len(s.Data) == 0 {
		return 0
	}
	return SendmeHeaderSize + len(s.Data)
}

// Append encodes s onto b.
func (s Sendme) Append(b []byte) []byte {
	if s.Version == 0 && len(s.Data) == 0 {
		return b
	}
	b = append(b, s.Version)
	b = binary.BigEndian.AppendUint16(b, uint16(len(s.Data)))
	return append(b, s.Data...)
}
