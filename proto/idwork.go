package proto

import (
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"io"
	"math/bits"
)

// The ID puzzle gives a node ID a price. A node's ID is fixed by its
// identity key (NodeIDFromKey), and an ID is accepted into the DHT only
// when
//
//	SHA-256("veil node id work v1\x00" || ID)
//
// starts with at least IDWorkBits zero bits. Finding such a key costs
// about 2^IDWorkBits key generations, paid once when a node creates its
// identity; anyone checks it from the ID alone with one hash, so IDs that
// travel without their key (contacts in NODES answers) are checked too. An
// attacker grinding IDs close to a target hash_name pays 2^IDWorkBits
// times more per try than before: the puzzle's hash is independent of the
// ID's place in the keyspace, so it cannot be aimed. (S/Kademlia's static
// puzzle, with the ID itself a hash of the key.)
const (
	// IDWorkBits is the puzzle's difficulty veil runs with: 4,096 key
	// generations on average (docs/BENCHMARKS.md has the measured time).
	IDWorkBits = 12
	// MaxIDWorkBits bounds the difficulty a caller may ask to grind.
	MaxIDWorkBits = 32

	idWorkDomain = "veil node id work v1\x00"
)

// IDWork returns the number of leading zero bits of id's puzzle hash.
func IDWork(id NodeID) int {
	var buf [len(idWorkDomain) + IDSize]byte
	copy(buf[:], idWorkDomain)
	copy(buf[len(idWorkDomain):], id[:])
	sum := sha256.Sum256(buf[:])
	n := 0
	for _, b := range sum {
		if b != 0 {
			return n + bits.LeadingZeros8(b)
		}
		n += 8
	}
	return n
}

// IDWorkOK reports whether id solves the puzzle at difficulty work.
func IDWorkOK(id NodeID, work int) bool { return work <= 0 || IDWork(id) >= work }

// GrindIdentitySeed draws Ed25519 seeds from r until the key's ID solves
// the puzzle at difficulty work, and returns the seed and the number of
// keys tried.
func GrindIdentitySeed(r io.Reader, work int) (seed []byte, tries int, err error) {
	if work < 0 || work > MaxIDWorkBits {
		return nil, 0, fmt.Errorf("proto: %w: ID work %d bits (0..%d)", ErrBadValue, work, MaxIDWorkBits)
	}
	seed = make([]byte, ed25519.SeedSize)
	for {
		if _, err := io.ReadFull(r, seed); err != nil {
			return nil, tries, fmt.Errorf("proto: drawing an identity seed: %w", err)
		}
		tries++
		pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
		if IDWorkOK(NodeIDFromKey(pub), work) {
			return seed, tries, nil
		}
	}
}
