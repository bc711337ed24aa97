package onion

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"veil/proto"
)

// Sizes and codes the wire fixes.
const (
	// HandshakeNtor is the HTYPE of veil's ntor handshake (Tor's number).
	HandshakeNtor uint16 = 2
	// NtorClientLen is the size of the client's ntor HDATA: ID | B | X.
	NtorClientLen = proto.IDSize + 2*proto.OnionKeySize
	// NtorServerLen is the size of the server's ntor HDATA: Y | AUTH.
	NtorServerLen = proto.OnionKeySize + 32
	// TagSize is the full GMAC tag of a relay cell; the cell carries its first
	// proto.DigestSize bytes, an authenticated SENDME carries all of it.
	TagSize = 16
	// SendmeVersion is the SENDME body version that carries a tag.
	SendmeVersion = 1
	// MaxDestLen bounds a BEGIN destination.
	MaxDestLen = 255

	create2Header  = 4
	created2Header = 2
	// MaxCreate2HLen is the largest HDATA a CREATE2 cell can carry.
	MaxCreate2HLen = proto.CellPayloadSize - create2Header
	// MaxCreated2HLen is the largest HDATA a CREATED2 cell can carry.
	MaxCreated2HLen = proto.CellPayloadSize - created2Header
	// maxExtend2HLen keeps an EXTEND2 (with an IPv6 address) inside one relay cell.
	maxExtend2HLen = proto.RelayDataSize - (proto.IDSize + 1 + 16 + 2) - create2Header
	// maxSendmeData keeps a SENDME inside one relay cell.
	maxSendmeData = proto.RelayDataSize - 3
)

// rd walks a message with bounds checks; after the first error every read
// returns zero values and the error sticks (as proto's reader).
type rd struct {
	b    []byte
	what string
	err  error
}

func (r *rd) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b) < n {
		r.err = fmt.Errorf("%s: %w", r.what, proto.ErrTruncated)
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func (r *rd) u8() uint8 {
	if p := r.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (r *rd) u16() uint16 {
	if p := r.take(2); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (r *rd) failf(err error, format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%s: %w: %s", r.what, err, fmt.Sprintf(format, args...))
	}
}

// end reports the sticky error or trailing bytes. With zeroPad, trailing
// bytes are allowed if they are all zero (the padding of a fixed cell).
func (r *rd) end(zeroPad bool) error {
	if r.err != nil {
		return r.err
	}
	for _, c := range r.b {
		if !zeroPad || c != 0 {
			return fmt.Errorf("%s: %w (%d bytes)", r.what, proto.ErrTrailing, len(r.b))
		}
	}
	return nil
}

// Create2 is the body of a CREATE2 cell (and the handshake part of EXTEND2).
type Create2 struct {
	HType uint16
	HData []byte // at most MaxCreate2HLen bytes
}

// ParseCreate2 decodes a CREATE2 cell payload. Bytes after HDATA must be zero
// (cell padding). HData aliases b.
func ParseCreate2(b []byte) (Create2, error) {
	r := rd{b: b, what: "create2"}
	c := parseCreate2(&r, MaxCreate2HLen)
	return c, r.end(true)
}

func parseCreate2(r *rd, max int) Create2 {
	var c Create2
	c.HType = r.u16()
	n := int(r.u16())
	if r.err == nil && n > max {
		r.failf(proto.ErrTooLong, "hlen %d > %d", n, max)
	}
	c.HData = r.take(n)
	return c
}

// Len is the encoded size without padding.
func (c Create2) Len() int { return create2Header + len(c.HData) }

// Append encodes c onto b (without padding).
func (c Create2) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, c.HType)
	b = binary.BigEndian.AppendUint16(b, uint16(len(c.HData)))
	return append(b, c.HData...)
}

// Created2 is the body of a CREATED2 cell and the data of an EXTENDED2 relay
// cell.
type Created2 struct {
	HData []byte // at most MaxCreated2HLen bytes
}

// ParseCreated2 decodes a CREATED2 cell payload or EXTENDED2 relay data.
// Bytes after HDATA must be zero. HData aliases b.
func ParseCreated2(b []byte) (Created2, error) {
	r := rd{b: b, what: "created2"}
	var c Created2
	n := int(r.u16())
	if r.err == nil && n > MaxCreated2HLen {
		r.failf(proto.ErrTooLong, "hlen %d > %d", n, MaxCreated2HLen)
	}
	c.HData = r.take(n)
	return c, r.end(true)
}

// Len is the encoded size without padding.
func (c Created2) Len() int { return created2Header + len(c.HData) }

// Append encodes c onto b (without padding).
func (c Created2) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(c.HData)))
	return append(b, c.HData...)
}

// Extend2 is the data of an EXTEND2 relay cell: which node to extend to,
// where it listens, and the CREATE2 body to send it.
type Extend2 struct {
	Next   proto.NodeID
	Addr   netip.AddrPort // a valid IPv4 or IPv6 address and port
	Create Create2
}

// ParseExtend2 decodes EXTEND2 relay data exactly (no padding).
func ParseExtend2(b []byte) (Extend2, error) {
	r := rd{b: b, what: "extend2"}
	var e Extend2
	copy(e.Next[:], r.take(proto.IDSize))
	ipLen := int(r.u8())
	if r.err == nil && ipLen != 4 && ipLen != 16 {
		r.failf(proto.ErrBadLength, "ip length %d", ipLen)
	}
	ip := r.take(ipLen)
	port := r.u16()
	if r.err == nil {
		a, _ := netip.AddrFromSlice(ip)
		e.Addr = netip.AddrPortFrom(a, port)
	}
	e.Create = parseCreate2(&r, maxExtend2HLen)
	return e, r.end(false)
}

// Len is the encoded size.
func (e Extend2) Len() int {
	return proto.IDSize + 1 + ipLen(e.Addr.Addr()) + 2 + e.Create.Len()
}

func ipLen(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 16
}

// Append encodes e onto b. An IPv4-mapped IPv6 address is written as IPv6;
// an invalid address is written as the IPv6 unspecified address.
func (e Extend2) Append(b []byte) []byte {
	b = append(b, e.Next[:]...)
	a := e.Addr.Addr()
	if a.Is4() {
		b = append(b, 4)
		ip := a.As4()
		b = append(b, ip[:]...)
	} else {
		b = append(b, 16)
		ip := a.As16()
		b = append(b, ip[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, e.Addr.Port())
	return e.Create.Append(b)
}

// Sendme is the data of a SENDME relay cell.
type Sendme struct {
	Version uint8
	Data    []byte // version 1: the TagSize-byte tag of the triggering cell
}

// ParseSendme decodes SENDME relay data exactly. Empty data is a version 0
// SENDME (Tor's legacy form, used at stream level). Data aliases b.
func ParseSendme(b []byte) (Sendme, error) {
	if len(b) == 0 {
		return Sendme{}, nil
	}
	r := rd{b: b, what: "sendme"}
	var s Sendme
	s.Version = r.u8()
	n := int(r.u16())
	if r.err == nil && n > maxSendmeData {
		r.failf(proto.ErrTooLong, "data length %d", n)
	}
	s.Data = r.take(n)
	if err := r.end(false); err != nil {
		return Sendme{}, err
	}
	if s.Version == 0 && len(s.Data) == 0 {
		// Encodes back as the empty body: not canonical.
		return Sendme{}, fmt.Errorf("sendme: %w: empty version 0 must be encoded as no bytes", proto.ErrBadValue)
	}
	return s, nil
}

// Len is the encoded size.
func (s Sendme) Len() int {
	if s.Version == 0 && len(s.Data) == 0 {
		return 0
	}
	return 3 + len(s.Data)
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

// Begin is the data of a BEGIN relay cell: the destination the last hop
// hands the stream to (a service name such as "echo" or "ordb", or
// "host:port" for an exit).
type Begin struct {
	Dest string // 1..MaxDestLen bytes
}

// ParseBegin decodes BEGIN relay data exactly.
func ParseBegin(b []byte) (Begin, error) {
	r := rd{b: b, what: "begin"}
	n := int(r.u8())
	if r.err == nil && n == 0 {
		r.failf(proto.ErrBadLength, "empty destination")
	}
	d := r.take(n)
	if err := r.end(false); err != nil {
		return Begin{}, err
	}
	return Begin{Dest: string(d)}, nil
}

// Len is the encoded size.
func (m Begin) Len() int { return 1 + len(m.Dest) }

// Append encodes m onto b. A destination longer than MaxDestLen is a
// programming error (callers check with Valid) and panics.
func (m Begin) Append(b []byte) []byte {
	if len(m.Dest) > MaxDestLen || len(m.Dest) == 0 {
		panic("onion: BEGIN destination length out of range")
	}
	b = append(b, byte(len(m.Dest)))
	return append(b, m.Dest...)
}

// Valid reports whether m can be encoded.
func (m Begin) Valid() bool { return len(m.Dest) > 0 && len(m.Dest) <= MaxDestLen }

// ParseReason decodes the one-byte body of END and TRUNCATED relay cells.
// An empty body means reason 0 (none given).
func ParseReason(b []byte) (uint8, error) {
	switch len(b) {
	case 0:
		return 0, nil
	case 1:
		return b[0], nil
	}
	return 0, fmt.Errorf("reason: %w (%d bytes)", proto.ErrTrailing, len(b)-1)
}
