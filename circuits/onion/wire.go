package onion

import "veil/proto"

// The circuit-level bodies (CREATE2, CREATED2, EXTEND2, EXTENDED2, SENDME,
// BEGIN, END, TRUNCATED) are parsed and encoded by proto, which draws their
// layouts. These names keep the circuit layer's vocabulary.

// Sizes and codes the wire fixes.
const (
	// HandshakeNtor is the HTYPE of veil's ntor handshake.
	HandshakeNtor = proto.HandshakeNtor
	// NtorClientLen is the size of the client's ntor HDATA: ID | B | X.
	NtorClientLen = proto.NtorRequestSize
	// NtorServerLen is the size of the server's ntor HDATA: Y | AUTH.
	NtorServerLen = proto.NtorReplySize
	// TagSize is the full GMAC tag of a relay cell; the cell carries its
	// first proto.DigestSize bytes, an authenticated SENDME carries all of
	// it.
	TagSize = proto.SendmeTagSize
	// SendmeVersion is the SENDME body version that carries a tag.
	SendmeVersion = proto.SendmeVersionTag
)

// Create2 is the body of a CREATE2 cell (and the handshake part of EXTEND2).
type Create2 = proto.Create2

// Created2 is the body of a CREATED2 cell and the data of an EXTENDED2
// relay cell.
type Created2 = proto.Created2

// Extend2 is the data of an EXTEND2 relay cell.
type Extend2 = proto.Extend2

// Sendme is the data of a SENDME relay cell.
type Sendme = proto.Sendme

// Begin is the data of a BEGIN relay cell.
type Begin = proto.Begin

// ParseCreate2 decodes a CREATE2 cell payload (see proto.ParseCreate2).
func ParseCreate2(b []byte) (Create2, error) { return proto.ParseCreate2(b) }

// ParseCreated2 decodes a CREATED2 cell payload or EXTENDED2 relay data
// (see proto.ParseCreated2).
func ParseCreated2(b []byte) (Created2, error) { return proto.ParseCreated2(b) }

// ParseExtend2 decodes EXTEND2 relay data (see proto.ParseExtend2).
func ParseExtend2(b []byte) (Extend2, error) { return proto.ParseExtend2(b) }

// ParseSendme decodes SENDME relay data (see proto.ParseSendme).
func ParseSendme(b []byte) (Sendme, error) { return proto.ParseSendme(b) }

// ParseBegin decodes BEGIN relay data (see proto.ParseBegin).
func ParseBegin(b []byte) (Begin, error) { return proto.ParseBegin(b) }

// ParseReason decodes the one-byte body of END and TRUNCATED relay cells
// (see proto.ParseEnd). On error it returns reason 0 (none given), which
// callers that ignore the error act on.
func ParseReason(b []byte) (uint8, error) {
	m, err := proto.ParseEnd(b)
	return m.Reason, err
}
