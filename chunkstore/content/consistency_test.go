package content

import (
	"errors"
	"testing"
)

func leavesN(n int, salt byte) []Hash {
	out := make([]Hash, n)
	for i := range out {
		out[i] = LeafHash([]byte{byte(i), byte(i >> 8), salt})
	}
	return out
}

// TestConsistency proves every prefix m of trees up to 70 leaves, checks
// the proof, and checks that a tampered proof, a wrong old root, and a
// tree that rewrote one old leaf (a fork) all fail.
func TestConsistency(t *testing.T) {
	leaves := leavesN(70, 0)
	for n := uint64(2); n <= 70; n++ {
		tree := MemTree(leaves[:n])
		rootN := tree.Root()
		for m := uint64(1); m < n; m++ {
			rootM := RootOf(leaves[:m])
			proof, err := ConsistencyProof(m, n, tree.Node)
			if err != nil {
				t.Fatalf("%d..%d: %v", m, n, err)
			}
			if err := VerifyConsistency(m, n, rootM, rootN, proof); err != nil {
				t.Fatalf("%d..%d: valid proof refused: %v", m, n, err)
			}
			for i := range proof {
				bad := append([]Hash(nil), proof...)
				bad[i][0] ^= 1
				if VerifyConsistency(m, n, rootM, rootN, bad) == nil {
					t.Fatalf("%d..%d: hash %d tampered, proof accepted", m, n, i)
				}
			}
			if VerifyConsistency(m, n, rootM, rootN, proof[:len(proof)-1]) == nil && len(proof) > 1 {
				t.Fatalf("%d..%d: truncated proof accepted", m, n)
			}
			// A fork: the publisher rewrote leaf m-1 in the longer tree.
			fork := append([]Hash(nil), leaves[:n]...)
			fork[m-1] = LeafHash([]byte("forked"))
			ft := MemTree(fork)
			fp, err := ConsistencyProof(m, n, ft.Node)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyConsistency(m, n, rootM, ft.Root(), fp); !errors.Is(err, ErrInconsistent) {
				t.Fatalf("%d..%d: forked tree accepted: %v", m, n, err)
			}
		}
	}
	if VerifyConsistency(3, 3, leaves[0], leaves[1], nil) == nil {
		t.Fatal("two roots of one length accepted")
	}
	if VerifyConsistency(0, 5, Hash{}, Hash{}, nil) != nil {
		t.Fatal("the empty tree is a prefix of every tree")
	}
}

func FuzzVerifyConsistency(f *testing.F) {
	leaves := leavesN(20, 1)
	p, _ := ConsistencyProof(7, 20, MemTree(leaves).Node)
	var seed []byte
	for _, h := range p {
		seed = append(seed, h[:]...)
	}
	f.Add(uint64(7), uint64(20), seed)
	f.Fuzz(func(t *testing.T, m, n uint64, raw []byte) {
		var proof []Hash
		for len(raw) >= HashSize && len(proof) < 2*MaxConsistencyHashes {
			proof = append(proof, Hash(raw[:HashSize]))
			raw = raw[HashSize:]
		}
		_ = VerifyConsistency(m%64, n%64, RootOf(leaves[:min(m%64, 20)]), MemTree(leaves).Root(), proof) // must not panic
	})
}
