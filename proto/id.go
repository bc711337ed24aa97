package proto

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/bits"
)

// NodeID is a node's 160-bit identifier: the first 20 bytes of SHA-256 over
// its Ed25519 identity public key. It is also a point of the Kademlia keyspace.
type NodeID [IDSize]byte

// HashName names content: the 160-bit hash of its descriptor (the
// DB_CONNECTED answer) or, for BitTorrent content, its infohash. It lives in
// the same keyspace as NodeID.
type HashName [IDSize]byte

// NodeIDFromKey returns the ID of the node whose identity public key is pub.
func NodeIDFromKey(pub []byte) NodeID {
	sum := sha256.Sum256(pub)
	var id NodeID
	copy(id[:], sum[:IDSize])
	return id
}

func (id NodeID) String() string  { return hex.EncodeToString(id[:]) }
func (h HashName) String() string { return hex.EncodeToString(h[:]) }
func (id NodeID) Short() string   { return hex.EncodeToString(id[:4]) }
func (h HashName) Key() NodeID    { return NodeID(h) }
func (id NodeID) IsZero() bool    { return id == NodeID{} }

// ParseNodeID reads a 40-digit hex ID.
func ParseNodeID(s string) (NodeID, error) {
	var id NodeID
	if len(s) != 2*IDSize {
		return id, fmt.Errorf("proto: node ID %q: want %d hex digits", s, 2*IDSize)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("proto: node ID %q: %w", s, err)
	}
	return id, nil
}

// ParseHashName reads a 40-digit hex hash_name (an infohash has the same form).
func ParseHashName(s string) (HashName, error) {
	var h HashName
	if len(s) != 2*IDSize {
		return h, fmt.Errorf("proto: hash_name %q: want %d hex digits", s, 2*IDSize)
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("proto: hash_name %q: want %d hex digits: %w", s, 2*IDSize, err)
	}
	return h, nil
}

// Xor returns the Kademlia distance between a and b.
func Xor(a, b NodeID) NodeID {
	var d NodeID
	for i := range d {
		d[i] = a[i] ^ b[i]
	}
	return d
}

// CommonPrefixLen returns how many leading bits a and b share (160 if equal).
func CommonPrefixLen(a, b NodeID) int {
	for i := range a {
		if x := a[i] ^ b[i]; x != 0 {
			return i*8 + bits.LeadingZeros8(x)
		}
	}
	return IDSize * 8
}

// Closer reports whether a is closer to target than b by XOR distance.
func Closer(target, a, b NodeID) bool {
	for i := range target {
		da, db := a[i]^target[i], b[i]^target[i]
		if da != db {
			return da < db
		}
	}
	return false
}
