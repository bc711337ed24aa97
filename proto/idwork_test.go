package proto

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"
)

func TestGrindIdentitySeed(t *testing.T) {
	for _, work := range []int{0, 4, 8} {
		seed, tries, err := GrindIdentitySeed(rand.Reader, work)
		if err != nil {
			t.Fatal(err)
		}
		id := NodeIDFromKey(ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey))
		if IDWork(id) < work || !IDWorkOK(id, work) || tries < 1 {
			t.Fatalf("work %d: ID %v has %d bits after %d tries", work, id.Short(), IDWork(id), tries)
		}
	}
	if _, _, err := GrindIdentitySeed(rand.Reader, MaxIDWorkBits+1); err == nil {
		t.Fatal("difficulty beyond the limit accepted")
	}
	// About one ID in 2^8 solves 8 bits: of 4,096 random IDs, far fewer
	// than half may pass (a check that always passes would let all in).
	pass := 0
	for i := range 4096 {
		var id NodeID
		id[0], id[1] = byte(i), byte(i>>8)
		if IDWorkOK(id, 8) {
			pass++
		}
	}
	if pass == 0 || pass > 64 {
		t.Fatalf("%d of 4096 IDs pass 8 bits of work, expected about 16", pass)
	}
}

// BenchmarkGrindIdentity measures what the ID puzzle costs a node creating
// its identity at the difficulty veil runs with (IDWorkBits); ns/op is the
// time of one whole grind, key-tries is the keys generated per grind.
func BenchmarkGrindIdentity(b *testing.B) {
	total := 0
	for range b.N {
		_, tries, err := GrindIdentitySeed(rand.Reader, IDWorkBits)
		if err != nil {
			b.Fatal(err)
		}
		total += tries
	}
	b.ReportMetric(float64(total)/float64(b.N), "key-tries")
}

// BenchmarkIDWorkTry measures one try of the grind: an Ed25519 key from a
// seed, its ID, and the puzzle's hash. A grind costs 2^IDWorkBits of them
// on average; unlike BenchmarkGrindIdentity this has no luck in it.
func BenchmarkIDWorkTry(b *testing.B) {
	seed := make([]byte, ed25519.SeedSize)
	for i := 0; b.Loop(); i++ {
		seed[0], seed[1], seed[2] = byte(i), byte(i>>8), byte(i>>16)
		pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
		_ = IDWorkOK(NodeIDFromKey(pub), IDWorkBits)
	}
}
