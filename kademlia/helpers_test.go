package kademlia

import (
	"crypto/ed25519"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"veil/proto"
)

var testNow = time.Unix(1_800_000_000, 0)

// testIdentity returns a reproducible identity number i, reachable at a
// 127.0.0.1 port label (nothing is dialed unless a test does).
func testIdentity(tb testing.TB, i int) Identity {
	tb.Helper()
	var seed [ed25519.SeedSize]byte
	binary.LittleEndian.PutUint64(seed[:], uint64(i)+1)
	key := ed25519.NewKeyFromSeed(seed[:])
	onion := make([]byte, proto.OnionKeySize)
	onion[0] = byte(i)
	return Identity{
		ID:       proto.NodeIDFromKey(key.Public().(ed25519.PublicKey)),
		Addr:     netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(10000+i)),
		OnionKey: onion,
		Key:      key,
	}
}

// idWithPrefix returns an ID equal to base but differing first at bit
// 159-bucket (so it falls in that bucket of base's table), with the
// rest set from v.
func idInBucket(base proto.NodeID, bucket int, v uint64) proto.NodeID {
	return RandomID(base, bucket, seedFrom(v))
}

func contactAt(id proto.NodeID, addr string) proto.DHTContact {
	return proto.DHTContact{ID: id, Addr: netip.MustParseAddrPort(addr)}
}

func identContact(id Identity) proto.DHTContact { return proto.DHTContact{ID: id.ID, Addr: id.Addr} }

// seedFrom derives a reproducible rand for tests.
func seedFrom(v uint64) *rand.Rand {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], v)
	return rand.New(rand.NewChaCha8(seed))
}
