package proto

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// MaxExtend2HLen keeps an EXTEND2 (with an IPv6 address) inside one relay
// cell.
const MaxExtend2HLen = RelayDataSize - (IDSize + 1 + 16 + 2) - Create2HeaderSize

// Extend2 is the data of an EXTEND2 relay cell: which node to extend to,
// where it listens, and the CREATE2 body to send it. No padding follows:
// the relay cell's Length delimits it.
//
//	[next ID 20B][IP length 1B = 4|16][IP][port 2B][CREATE2 body]
type Extend2 struct {
	Next   NodeID
	Addr   netip.AddrPort // a valid IPv4 or IPv6 address and port
	Create Create2        // HDATA at most MaxExtend2HLen bytes
}

// ParseExtend2 decodes EXTEND2 relay data exactly. Create.HData aliases b.
func ParseExtend2(b []byte) (Extend2, error) {
	r := reader{b: b, what: "extend2"}
	var e Extend2
	copy(e.Next[:], r.take(IDSize))
	n := int(r.byte())
	if r.err == nil && n != 4 && n != 16 {
		r.fail(fmt.Errorf("extend2: %w: ip length %d", ErrBadLength, n))
	}
	ip := r.take(n)
	port := r.uint16()
	if r.err == nil {
		a, _ := netip.AddrFromSlice(ip) // 4 or 16 bytes: always valid
		e.Addr = netip.AddrPortFrom(a, port)
	}
	e.Create = parseCreate2(&r, MaxExtend2HLen)
	if err := r.end(); err != nil {
		return Extend2{}, err
	}
	return e, nil
}

// Len is the encoded size.
func (e Extend2) Len() int {
	return IDSize + 1 + extendIPLen(e.Addr.Addr()) + 2 + e.Create.Len()
}

func extendIPLen(a netip.Addr) int {
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
		ip := a.As4()
		b = append(b, 4)
		b = append(b, ip[:]...)
	} else {
		ip := a.As16()
		b = append(b, 16)
		b = append(b, ip[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, e.Addr.Port())
	return e.Create.Append(b)
}
