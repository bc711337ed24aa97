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

// loopback is the remote address of every test link.
var loopback = netip.MustParseAddr("127.0.0.1")

// workSeeds[i] completes test identity i's seed so that its ID solves the
// ID puzzle at proto.IDWorkBits (found once by grinding; grinding in every
// test run would cost seconds, more under -race). TestWorkSeeds checks them.
var workSeeds = []uint64{
	190, 1984, 5550, 144, 11142, 26, 10258, 8296, 4375, 1069, 378, 631, 4142, 793, 8168, 7461, 7841, 8526, 6458, 76, 3427, 1968, 2932, 6265, 5074, 3770, 7926, 2016, 2498, 734, 9942, 5563, 4904, 3408, 4905, 1483, 13071, 3905, 1402, 280, 3947, 5620, 1990, 3744, 4015, 438, 4073, 9202, 4719, 1555, 4202, 3227, 1441, 1573, 10047, 6188, 11965, 663, 5164, 2173, 13002, 1180, 1884, 12655, 11329, 9304, 1374, 3374, 6654, 3878, 1157, 320, 223, 493, 3668, 109, 8448, 7338, 4228, 9592, 723, 10200, 3616, 3523, 2362, 3004, 6113, 6789, 7560, 563, 1144, 4856, 3189, 883, 2245, 360, 9842, 3873, 3589, 8314, 1342, 4898, 1789, 601, 2717, 5408, 8399, 10622, 2505, 6861, 5021, 4525, 709, 3020, 9554, 9114, 2910, 4012, 5542, 2818, 111, 7277, 5810, 3127, 2488, 1929, 2115, 351,
}

// testIdentity returns a reproducible identity number i whose ID solves
// the ID puzzle, reachable at a 127.0.0.1 port label (nothing is dialed
// unless a test does). i < len(workSeeds).
func testIdentity(tb testing.TB, i int) Identity {
	tb.Helper()
	key := ed25519.NewKeyFromSeed(testSeed(i))
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

func testSeed(i int) []byte {
	var seed [ed25519.SeedSize]byte
	binary.LittleEndian.PutUint64(seed[:], uint64(i)+1)
	binary.LittleEndian.PutUint64(seed[8:], workSeeds[i])
	return seed[:]
}

func TestWorkSeeds(t *testing.T) {
	for i := range workSeeds {
		if id := testIdentity(t, i); !proto.IDWorkOK(id.ID, proto.IDWorkBits) {
			t.Fatalf("test identity %d: ID %v solves %d bits, want %d", i, id.ID.Short(), proto.IDWork(id.ID), proto.IDWorkBits)
		}
	}
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
