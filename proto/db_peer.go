package proto

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// MaxFoundPeers bounds the records in one DB_FOUND_PEER answer.
const MaxFoundPeers = 16

// Sizes of the address fields of a DBPeer record.
const (
	ipv4Size = 4
	ipv6Size = 16
	portSize = 2
)

// DBPeer is one DB_FIND_PEER / DB_FOUND_PEER record, byte-exact as the Peersm
// specification (its RSA "modulus" slot carries the X25519 onion key):
//
//	[ID length 1B = 20][ID 20B]
//	[IP length 1B = 0|4|16][IP]
//	[port length 1B = 0|2][port 2B big-endian]
//	[key length 1B = 32][X25519 onion key 32B]
//
// The IP and the port are both present or both absent; when absent, Addr is
// the zero (invalid) netip.AddrPort. A 16-byte IP is kept as IPv6 even when
// it is an IPv4-mapped address, so re-encoding gives the same bytes.
type DBPeer struct {
	ID       NodeID
	Addr     netip.AddrPort // invalid (zero) when the IP is absent
	OnionKey []byte         // OnionKeySize bytes; aliases the parsed buffer
}

func (p DBPeer) ipLen() int {
	if !p.Addr.IsValid() {
		return 0
	}
	if p.Addr.Addr().Is4() {
		return ipv4Size
	}
	return ipv6Size
}

// Len is the encoded size.
func (p DBPeer) Len() int {
	n := 1 + IDSize + 1 + p.ipLen() + 1 + 1 + len(p.OnionKey)
	if p.Addr.IsValid() {
		n += portSize
	}
	return n
}

// Append encodes p onto b. An IPv6 zone is not encoded. Fields are assumed
// valid (see Validate).
func (p DBPeer) Append(b []byte) []byte {
	b = append(b, IDSize)
	b = append(b, p.ID[:]...)
	switch p.ipLen() {
	case ipv4Size:
		a := p.Addr.Addr().As4()
		b = append(b, ipv4Size)
		b = append(b, a[:]...)
	case ipv6Size:
		a := p.Addr.Addr().As16()
		b = append(b, ipv6Size)
		b = append(b, a[:]...)
	default:
		b = append(b, 0)
	}
	if p.Addr.IsValid() {
		b = append(b, portSize)
		b = binary.BigEndian.AppendUint16(b, p.Addr.Port())
	} else {
		b = append(b, 0)
	}
	b = append(b, byte(len(p.OnionKey)))
	return append(b, p.OnionKey...)
}

// Validate checks field sizes.
func (p DBPeer) Validate() error {
	if len(p.OnionKey) != OnionKeySize {
		return fmt.Errorf("db_peer: %w: onion key of %d bytes, want %d", ErrBadLength, len(p.OnionKey), OnionKeySize)
	}
	return nil
}

// parseDBPeer reads one record from r.
func parseDBPeer(r *reader) DBPeer {
	var p DBPeer
	if n := r.byte(); r.err == nil && n != IDSize {
		r.fail(fmt.Errorf("%s: %w: ID length %d, want %d", r.what, ErrBadLength, n, IDSize))
	}
	copy(p.ID[:], r.take(IDSize))
	ipLen := r.byte()
	var ip netip.Addr
	switch {
	case r.err != nil:
	case ipLen == 0:
	case ipLen == ipv4Size:
		if a := r.take(ipv4Size); a != nil {
			ip = netip.AddrFrom4([ipv4Size]byte(a))
		}
	case ipLen == ipv6Size:
		if a := r.take(ipv6Size); a != nil {
			ip = netip.AddrFrom16([ipv6Size]byte(a))
		}
	default:
		r.fail(fmt.Errorf("%s: %w: IP length %d", r.what, ErrBadLength, ipLen))
	}
	portLen := r.byte()
	switch {
	case r.err != nil:
	case portLen == 0 && ipLen == 0:
	case portLen == portSize && ipLen != 0:
		port := r.uint16()
		if r.err == nil {
			p.Addr = netip.AddrPortFrom(ip, port)
		}
	default:
		r.fail(fmt.Errorf("%s: %w: port length %d with IP length %d", r.what, ErrBadLength, portLen, ipLen))
	}
	if n := r.byte(); r.err == nil && n != OnionKeySize {
		r.fail(fmt.Errorf("%s: %w: onion key length %d, want %d", r.what, ErrBadLength, n, OnionKeySize))
	}
	p.OnionKey = r.take(OnionKeySize)
	if r.err != nil {
		return DBPeer{}
	}
	return p
}

// ParseDBPeer decodes exactly one record (a DB_FIND_PEER message). OnionKey
// aliases b.
func ParseDBPeer(b []byte) (DBPeer, error) {
	r := reader{b: b, what: "db_peer"}
	p := parseDBPeer(&r)
	if err := r.end(); err != nil {
		return DBPeer{}, err
	}
	return p, nil
}

// DBFindPeer is the DB_FIND_PEER message: the asker's own record, sent to a
// bridge that answers with peers close to it.
type DBFindPeer struct {
	DBPeer
}

// Command returns RelayDBFindPeer.
func (DBFindPeer) Command() RelayCommand { return RelayDBFindPeer }

// ParseDBFindPeer decodes a DB_FIND_PEER message.
func ParseDBFindPeer(b []byte) (DBFindPeer, error) {
	p, err := ParseDBPeer(b)
	return DBFindPeer{p}, err
}

// DBFoundPeer is the DB_FOUND_PEER answer: 1..MaxFoundPeers records
// concatenated, with no count field (the message length delimits them).
type DBFoundPeer struct {
	Peers []DBPeer
}

// Command returns RelayDBFoundPeer.
func (DBFoundPeer) Command() RelayCommand { return RelayDBFoundPeer }

// Len is the encoded size.
func (m DBFoundPeer) Len() int {
	n := 0
	for _, p := range m.Peers {
		n += p.Len()
	}
	return n
}

// Append encodes m onto b. Fields are assumed valid (see Validate).
func (m DBFoundPeer) Append(b []byte) []byte {
	for _, p := range m.Peers {
		b = p.Append(b)
	}
	return b
}

// Validate checks the record count and each record.
func (m DBFoundPeer) Validate() error {
	if len(m.Peers) == 0 || len(m.Peers) > MaxFoundPeers {
		return fmt.Errorf("db_found_peer: %w: %d records, want 1..%d", ErrBadValue, len(m.Peers), MaxFoundPeers)
	}
	for i, p := range m.Peers {
		if err := p.Validate(); err != nil {
			return fmt.Errorf("db_found_peer record %d: %w", i, err)
		}
	}
	return nil
}

// ParseDBFoundPeer decodes a DB_FOUND_PEER answer. The record count is
// bounded by MaxFoundPeers before more than MaxFoundPeers records are
// kept. OnionKeys alias b.
func ParseDBFoundPeer(b []byte) (DBFoundPeer, error) {
	if len(b) == 0 {
		return DBFoundPeer{}, fmt.Errorf("db_found_peer: %w: no records", ErrTruncated)
	}
	r := reader{b: b, what: "db_found_peer"}
	var peers []DBPeer
	for len(r.b) > 0 && r.err == nil {
		if len(peers) == MaxFoundPeers {
			return DBFoundPeer{}, fmt.Errorf("db_found_peer: %w: more than %d records", ErrTooLong, MaxFoundPeers)
		}
		if peers == nil {
			peers = make([]DBPeer, 0, min(MaxFoundPeers, len(b)/minDBPeerSize+1))
		}
		p := parseDBPeer(&r)
		if r.err == nil {
			peers = append(peers, p)
		}
	}
	if err := r.end(); err != nil {
		return DBFoundPeer{}, err
	}
	return DBFoundPeer{Peers: peers}, nil
}

// minDBPeerSize is the size of a record without an address.
const minDBPeerSize = 1 + IDSize + 1 + 1 + 1 + OnionKeySize
