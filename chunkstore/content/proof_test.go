package content

import (
	"errors"
	"testing"
)

// The encoding's round trip, truncations and fuzzer are proto's
// (proto.MerkleProof); content adds the bound on a live head's length.

func TestParseProofWrapsMalformed(t *testing.T) {
	for _, b := range [][]byte{nil, {KindStatic}, {9, 0}, {KindStatic, 0, 1}} {
		if _, err := ParseProof(b); !errors.Is(err, ErrProofMalformed) {
			t.Errorf("ParseProof(%x): %v, want ErrProofMalformed", b, err)
		}
	}
	if _, err := ParseHead(make([]byte, HeadSize-1)); !errors.Is(err, ErrProofMalformed) {
		t.Errorf("short head: %v", err)
	}
}

func TestHeadLengthBound(t *testing.T) {
	for _, n := range []uint64{0, MaxChunks, MaxChunks + 1, 1 << 63} {
		h := Head{Length: n, Timestamp: 5}
		want := n <= MaxChunks
		if _, err := ParseHead(h.Append(nil)); (err == nil) != want {
			t.Errorf("head of %d chunks: %v", n, err)
		}
		p := Proof{Live: true, Head: h, Hashes: make([]Hash, 2)}
		got, err := ParseProof(p.Append(nil))
		if (err == nil) != want {
			t.Errorf("live proof with a head of %d chunks: %v", n, err)
		}
		if err != nil && !errors.Is(err, ErrProofMalformed) {
			t.Errorf("head of %d chunks: %v, want ErrProofMalformed", n, err)
		}
		if err == nil && (got.Head != h || len(got.Hashes) != 2) {
			t.Errorf("parsed %+v", got)
		}
	}
}

// FuzzVerify feeds arbitrary proofs and chunks to the verifier: it must
// never panic, and must accept only what the real tree proves.
func FuzzVerify(f *testing.F) {
	s := newStatic(f, 40*498+7, 11)
	good := s.rangeOf(f, 3, 20)
	f.Add(uint64(3), uint8(17), Proof{Hashes: good.Proof.Hashes}.Append(nil), []byte{})
	f.Add(uint64(39), uint8(2), []byte{0, 0}, []byte{1})
	f.Fuzz(func(t *testing.T, lo uint64, n uint8, proof []byte, flip []byte) {
		p, err := ParseProof(proof)
		if err != nil {
			return
		}
		lo %= 41
		hi := min(lo+uint64(n), uint64(len(s.chunks)))
		if hi < lo {
			return
		}
		r := Range{Start: lo, Chunks: s.chunks[lo:hi], Proof: p}
		tampered := false
		if len(flip) > 0 && hi > lo {
			c := append([]byte(nil), r.Chunks[0]...)
			c[int(flip[0])%len(c)] ^= 1
			r.Chunks = append([][]byte{c}, r.Chunks[1:]...)
			tampered = true
		}
		if _, err := Verify(s.d, s.name, r, 2); err == nil && tampered {
			t.Fatal("tampered chunk verified")
		}
	})
}
