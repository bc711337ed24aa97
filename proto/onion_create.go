package proto

import (
	"encoding/binary"
	"fmt"
)

// HandshakeNtor is the HTYPE of veil's ntor handshake (Tor's number).
const HandshakeNtor uint16 = 2

// Sizes of the CREATE2 and CREATED2 bodies.
const (
	// Create2HeaderSize is HTYPE and HLEN.
	Create2HeaderSize = 2 + 2
	// Created2HeaderSize is HLEN.
	Created2HeaderSize = 2
	// MaxCreate2HLen is the largest HDATA a CREATE2 cell can carry.
	MaxCreate2HLen = CellPayloadSize - Create2HeaderSize
	// MaxCreated2HLen is the largest HDATA a CREATED2 cell can carry.
	MaxCreated2HLen = CellPayloadSize - Created2HeaderSize
)

// Create2 is the body of a CREATE2 cell (and the handshake part of an
// EXTEND2):
//
//	[HTYPE 2B][HLEN 2B][HDATA HLEN bytes]
//
// In a cell it is zero-padded to CellPayloadSize. HTYPE names the layout
// of HDATA (NtorRequest for HandshakeNtor); it is not checked here: the
// handshake layer refuses an unknown one (onion.ErrHandshakeType), in the
// one place that turns handshake failures into a DESTROY reason.
type Create2 struct {
	HType uint16
	HData []byte // at most MaxCreate2HLen bytes; aliases the parsed buffer
}

// ParseCreate2 decodes a CREATE2 cell payload. Bytes after HDATA must be
// zero (the cell's padding). HData aliases b.
func ParseCreate2(b []byte) (Create2, error) {
	r := reader{b: b, what: "create2"}
	c := parseCreate2(&r, MaxCreate2HLen)
	if err := r.endPadded(); err != nil {
		return Create2{}, err
	}
	return c, nil
}

// parseCreate2 reads a CREATE2 body whose HDATA may be at most max bytes
// (less inside an EXTEND2, which must fit one relay cell).
func parseCreate2(r *reader, max int) Create2 {
	var c Create2
	c.HType = r.uint16()
	n := int(r.uint16())
	if r.err == nil && n > max {
		r.fail(fmt.Errorf("%s: %w: hlen %d > %d", r.what, ErrTooLong, n, max))
	}
	c.HData = r.take(n)
	return c
}

// Len is the encoded size without padding.
func (c Create2) Len() int { return Create2HeaderSize + len(c.HData) }

// Append encodes c onto b (without padding).
func (c Create2) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, c.HType)
	b = binary.BigEndian.AppendUint16(b, uint16(len(c.HData)))
	return append(b, c.HData...)
}

// Created2 is the body of a CREATED2 cell and the data of an EXTENDED2
// relay cell:
//
//	[HLEN 2B][HDATA HLEN bytes]
type Created2 struct {
	HData []byte // at most MaxCreated2HLen bytes; aliases the parsed buffer
}

// ParseCreated2 decodes a CREATED2 cell payload or EXTENDED2 relay data.
// Bytes after HDATA must be zero (padding). HData aliases b.
func ParseCreated2(b []byte) (Created2, error) {
	r := reader{b: b, what: "created2"}
	var c Created2
	n := int(r.uint16())
	if r.err == nil && n > MaxCreated2HLen {
		r.fail(fmt.Errorf("created2: %w: hlen %d > %d", ErrTooLong, n, MaxCreated2HLen))
	}
	c.HData = r.take(n)
	if err := r.endPadded(); err != nil {
		return Created2{}, err
	}
	return c, nil
}

// Len is the encoded size without padding.
func (c Created2) Len() int { return Created2HeaderSize + len(c.HData) }

// Append encodes c onto b (without padding).
func (c Created2) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(c.HData)))
	return append(b, c.HData...)
}
