package content

import (
	"crypto/sha256"
	"testing"

	"golang.org/x/crypto/blake2b"
)

// The hash choice: SHA-256 (SHA-NI here) against BLAKE2b-256 on a leaf
// input and a parent input. BLAKE3 was measured out of tree (see doc.go).
func BenchmarkHashLeafSHA256(b *testing.B)  { benchHash(b, 1+ChunkSize, sha256.Sum256) }
func BenchmarkHashLeafBLAKE2b(b *testing.B) { benchHash(b, 1+ChunkSize, blake2b.Sum256) }
func BenchmarkHashParentSHA256(b *testing.B) {
	benchHash(b, 1+2*HashSize, sha256.Sum256)
}
func BenchmarkHashParentBLAKE2b(b *testing.B) {
	benchHash(b, 1+2*HashSize, blake2b.Sum256)
}

var sink Hash

func benchHash(b *testing.B, n int, f func([]byte) [32]byte) {
	buf := make([]byte, n)
	b.SetBytes(int64(n))
	for i := 0; i < b.N; i++ {
		sink = f(buf)
	}
}

// BenchmarkTree builds the root of 16 MB of chunks: leaves and parents.
func BenchmarkTree(b *testing.B) {
	data := make([]byte, 16<<20)
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		var t Builder
		for off := 0; off < len(data); off += ChunkSize {
			t.Append(LeafHash(data[off:min(off+ChunkSize, len(data))]))
		}
		sink = t.Root()
	}
}

// BenchmarkVerifyWindow verifies a 200-chunk window of a 4 GB content.
func BenchmarkVerifyWindow(b *testing.B) {
	const n = (4 << 30) / ChunkSize
	chunks := make([][]byte, 200)
	leaves := make([]Hash, 200)
	for i := range chunks {
		chunks[i] = make([]byte, ChunkSize)
		chunks[i][0] = byte(i)
		leaves[i] = LeafHash(chunks[i])
	}
	lo := uint64(n / 3)
	// A tree whose nodes outside the window are fixed fakes: the proof is
	// what a real one of that shape would be.
	fake := func(a, b uint64) (Hash, error) { return Hash{byte(a), byte(b)}, nil }
	proof, _ := BuildProof(n, lo, lo+200, fake)
	root, err := rootFrom(n, lo, leaves, proof)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(200 * ChunkSize)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		ls := make([]Hash, len(chunks))
		for k, c := range chunks {
			ls[k] = LeafHash(c)
		}
		if _, err := VerifyRange(root, n, lo, ls, proof, 64); err != nil {
			b.Fatal(err)
		}
	}
}

// rootFrom computes the root a proof leads to (test helper).
func rootFrom(n, lo uint64, leaves, proof []Hash) (Hash, error) {
	hi := lo + uint64(len(leaves))
	used := 0
	var walk func(a, b uint64) Hash
	walk = func(a, b uint64) Hash {
		if b <= lo || a >= hi {
			used++
			return proof[used-1]
		}
		if b-a == 1 {
			return leaves[a-lo]
		}
		k := split(b - a)
		return ParentHash(walk(a, a+k), walk(a+k, b))
	}
	return walk(0, n), nil
}
