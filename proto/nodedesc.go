package proto

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// NodeDescriptor is what a node says about itself: its identity key, the
// X25519 onion key circuits use for the ntor handshake, where to reach it,
// the roles it plays and how long this statement holds. The identity key
// signs it, so whoever relays a descriptor cannot change it.
//
//	[ID 20B]
//	[identity key 32B]                 Ed25519; ID = NodeIDFromKey(identity key)
//	[onion key 32B]                    X25519
//	[flags 1B]                         FlagRelay | FlagORDB | ...
//	[address count 1B]                 at most MaxDescriptorAddrs
//	  [IP length 1B][IP 4|16B][port 2B]    per address
//	[exit port range count 1B]         at most MaxExitPortRanges; 0 unless FlagExit
//	  [low port 2B][high port 2B]          per range, ascending, disjoint
//	[valid after 8B][valid until 8B]   unix seconds, big-endian
//	[signature 64B]                    Ed25519 over SignedBytes
//
// The signature covers NodeDescriptorDomain followed by every byte before
// the signature, so it cannot be replayed as any other signed veil message.
type NodeDescriptor struct {
	ID          NodeID
	IdentityKey []byte // IdentityKeySize bytes (ed25519.PublicKey)
	OnionKey    []byte // OnionKeySize bytes (X25519 public key)
	Addrs       []netip.AddrPort
	Flags       uint8
	// ExitPorts, for an exit, are the ports its policy accepts some
	// address on (a summary, as Tor's microdescriptors give): clients
	// pick exits whose ranges hold the port they want. Empty: none.
	ExitPorts  []PortRange
	ValidAfter uint64 // unix seconds, inclusive
	ValidUntil uint64 // unix seconds, exclusive
	Signature  []byte // SignatureSize bytes
}

// Node descriptor flags: the roles a node offers (DESIGN.md "Roles").
const (
	FlagRelay       uint8 = 1 << 0 // forwards cells of other people's circuits
	FlagORDB        uint8 = 1 << 1 // last hop of circuits: serves and relays DB_* queries
	FlagFacilitator uint8 = 1 << 2 // an ORDB that can also fetch from BitTorrent
	FlagExit        uint8 = 1 << 3 // opens TCP streams to the internet
	FlagBridge      uint8 = 1 << 4 // bootstrap node answering DB_FIND_PEER
	knownNodeFlags        = FlagRelay | FlagORDB | FlagFacilitator | FlagExit | FlagBridge
)

// MaxDescriptorAddrs bounds the addresses one descriptor lists.
const MaxDescriptorAddrs = 4

// MaxExitPortRanges bounds an exit's port summary.
const MaxExitPortRanges = 16

// PortRange is the ports Lo..Hi, both included.
type PortRange struct{ Lo, Hi uint16 }

// Contains reports whether port is in the range.
func (r PortRange) Contains(port uint16) bool { return r.Lo <= port && port <= r.Hi }

// AcceptsPort reports whether the exit described accepts some address on
// port, by its summary.
func (d NodeDescriptor) AcceptsPort(port uint16) bool {
	for _, r := range d.ExitPorts {
		if r.Contains(port) {
			return true
		}
	}
	return false
}

// NodeDescriptorDomain prefixes the bytes a node descriptor signature
// covers (domain separation).
const NodeDescriptorDomain = "veil node descriptor v1"

// Errors of NodeDescriptor.Verify, wrapped with details.
var (
	ErrDescriptorSignature = errors.New("proto: node descriptor signature does not verify")
	ErrDescriptorID        = errors.New("proto: node descriptor ID does not match its identity key")
	ErrDescriptorExpired   = errors.New("proto: node descriptor outside its validity window")
)

const nodeDescFixed = IDSize + IdentityKeySize + OnionKeySize + 1 + 1 + 1 + 8 + 8 + SignatureSize

func addrLen(a netip.AddrPort) int {
	if a.Addr().Is4() {
		return 1 + 4 + 2
	}
	return 1 + 16 + 2
}

// Len is the encoded size.
func (d NodeDescriptor) Len() int {
	n := nodeDescFixed
	for _, a := range d.Addrs {
		n += addrLen(a)
	}
	return n + 4*len(d.ExitPorts)
}

// appendBody appends every field before the signature.
func (d NodeDescriptor) appendBody(b []byte) []byte {
	b = append(b, d.ID[:]...)
	b = append(b, d.IdentityKey...)
	b = append(b, d.OnionKey...)
	b = append(b, d.Flags, byte(len(d.Addrs)))
	for _, a := range d.Addrs {
		if ip := a.Addr(); ip.Is4() {
			v := ip.As4()
			b = append(b, 4)
			b = append(b, v[:]...)
		} else {
			v := ip.As16()
			b = append(b, 16)
			b = append(b, v[:]...)
		}
		b = binary.BigEndian.AppendUint16(b, a.Port())
	}
	b = append(b, byte(len(d.ExitPorts)))
	for _, r := range d.ExitPorts {
		b = binary.BigEndian.AppendUint16(b, r.Lo)
		b = binary.BigEndian.AppendUint16(b, r.Hi)
	}
	b = binary.BigEndian.AppendUint64(b, d.ValidAfter)
	return binary.BigEndian.AppendUint64(b, d.ValidUntil)
}

// SignedBytes returns the bytes the signature covers: NodeDescriptorDomain
// followed by the encoding up to the signature.
func (d NodeDescriptor) SignedBytes() []byte {
	b := make([]byte, 0, len(NodeDescriptorDomain)+d.Len()-SignatureSize)
	b = append(b, NodeDescriptorDomain...)
	return d.appendBody(b)
}

// Append encodes d onto b. Fields are assumed valid (see Validate).
func (d NodeDescriptor) Append(b []byte) []byte {
	b = d.appendBody(b)
	return append(b, d.Signature...)
}

// Validate checks field sizes and values, not the signature (see Verify).
func (d NodeDescriptor) Validate() error {
	switch {
	case len(d.IdentityKey) != IdentityKeySize:
		return fmt.Errorf("node descriptor: %w: identity key of %d bytes, want %d", ErrBadLength, len(d.IdentityKey), IdentityKeySize)
	case len(d.OnionKey) != OnionKeySize:
		return fmt.Errorf("node descriptor: %w: onion key of %d bytes, want %d", ErrBadLength, len(d.OnionKey), OnionKeySize)
	case len(d.Signature) != SignatureSize:
		return fmt.Errorf("node descriptor: %w: signature of %d bytes, want %d", ErrBadLength, len(d.Signature), SignatureSize)
	case len(d.Addrs) > MaxDescriptorAddrs:
		return fmt.Errorf("node descriptor: %w: %d addresses > %d", ErrTooLong, len(d.Addrs), MaxDescriptorAddrs)
	case d.Flags&^knownNodeFlags != 0:
		return fmt.Errorf("node descriptor: %w: unknown flags %#x", ErrBadValue, d.Flags)
	case len(d.ExitPorts) > MaxExitPortRanges:
		return fmt.Errorf("node descriptor: %w: %d exit port ranges > %d", ErrTooLong, len(d.ExitPorts), MaxExitPortRanges)
	case len(d.ExitPorts) > 0 && d.Flags&FlagExit == 0:
		return fmt.Errorf("node descriptor: %w: exit ports without the exit flag", ErrBadValue)
	case d.ValidUntil <= d.ValidAfter:
		return fmt.Errorf("node descriptor: %w: valid until %d not after valid after %d", ErrBadValue, d.ValidUntil, d.ValidAfter)
	}
	for _, a := range d.Addrs {
		if !a.IsValid() || a.Addr().Zone() != "" || a.Port() == 0 || a.Addr().IsUnspecified() {
			return fmt.Errorf("node descriptor: %w: address %v", ErrBadValue, a)
		}
	}
	for i, r := range d.ExitPorts {
		if r.Lo == 0 || r.Hi < r.Lo || (i > 0 && uint32(r.Lo) <= uint32(d.ExitPorts[i-1].Hi)+1) {
			return fmt.Errorf("node descriptor: %w: exit port range %d-%d (ranges ascend, are disjoint and apart, ports from 1)", ErrBadValue, r.Lo, r.Hi)
		}
	}
	return nil
}

// ParseNodeDescriptor decodes a descriptor. Byte slices alias b. It checks
// the encoding only; call Verify before trusting the contents.
func ParseNodeDescriptor(b []byte) (NodeDescriptor, error) {
	var d NodeDescriptor
	r := reader{b: b, what: "node descriptor"}
	copy(d.ID[:], r.take(IDSize))
	d.IdentityKey = r.take(IdentityKeySize)
	d.OnionKey = r.take(OnionKeySize)
	d.Flags = r.byte()
	n := int(r.byte())
	if r.err == nil && n > MaxDescriptorAddrs {
		r.fail(fmt.Errorf("node descriptor: %w: %d addresses > %d", ErrTooLong, n, MaxDescriptorAddrs))
	}
	if r.err == nil && n > 0 {
		d.Addrs = make([]netip.AddrPort, 0, n)
	}
	for i := 0; i < n && r.err == nil; i++ {
		ipb := r.lenPrefixed(16)
		port := r.uint16()
		if r.err != nil {
			break
		}
		var ip netip.Addr
		switch len(ipb) {
		case 4:
			ip = netip.AddrFrom4([4]byte(ipb))
		case 16:
			ip = netip.AddrFrom16([16]byte(ipb)) // 4-in-6 stays 16 bytes on re-encoding
		default:
			r.fail(fmt.Errorf("node descriptor: %w: IP of %d bytes", ErrBadLength, len(ipb)))
		}
		d.Addrs = append(d.Addrs, netip.AddrPortFrom(ip, port))
	}
	np := int(r.byte())
	if r.err == nil && np > MaxExitPortRanges {
		r.fail(fmt.Errorf("node descriptor: %w: %d exit port ranges > %d", ErrTooLong, np, MaxExitPortRanges))
	}
	if r.err == nil && np > 0 {
		d.ExitPorts = make([]PortRange, 0, np)
	}
	for i := 0; i < np && r.err == nil; i++ {
		lo := r.uint16()
		hi := r.uint16()
		d.ExitPorts = append(d.ExitPorts, PortRange{lo, hi})
	}
	d.ValidAfter = r.uint64()
	d.ValidUntil = r.uint64()
	d.Signature = r.take(SignatureSize)
	if err := r.end(); err != nil {
		return NodeDescriptor{}, err
	}
	if err := d.Validate(); err != nil {
		return NodeDescriptor{}, err
	}
	return d, nil
}

// Sign fills d.Signature with priv's signature over SignedBytes. priv must
// be the key whose public half is d.IdentityKey.
func (d *NodeDescriptor) Sign(priv ed25519.PrivateKey) {
	d.Signature = ed25519.Sign(priv, d.SignedBytes())
}

// Verify checks that d is well formed, that its ID is the hash of its
// identity key, that the identity key signed it and that now lies within
// [ValidAfter, ValidUntil).
func (d NodeDescriptor) Verify(now time.Time) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if want := NodeIDFromKey(d.IdentityKey); want != d.ID {
		return fmt.Errorf("%w: ID %s, key hashes to %s", ErrDescriptorID, d.ID, want)
	}
	if !ed25519.Verify(ed25519.PublicKey(d.IdentityKey), d.SignedBytes(), d.Signature) {
		return fmt.Errorf("%w (node %s)", ErrDescriptorSignature, d.ID)
	}
	t := now.Unix()
	if t < 0 || uint64(t) < d.ValidAfter || uint64(t) >= d.ValidUntil {
		return fmt.Errorf("%w: now %d, valid [%d, %d) (node %s)", ErrDescriptorExpired, t, d.ValidAfter, d.ValidUntil, d.ID)
	}
	return nil
}
