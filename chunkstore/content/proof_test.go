package content

import (
	"bytes"
	"testing"
)

func sampleProofs() []Proof {
	var hs []Hash
	for i := 0; i < 5; i++ {
		hs = append(hs, LeafHash([]byte{byte(i)}))
	}
	head := Head{Length: 12345, Timestamp: 99, Root: hs[0]}
	head.Signature[0] = 7
	return []Proof{
		{},
		{Hashes: hs},
		{Live: true, Head: head},
		{Live: true, Head: head, Hashes: hs[:3]},
		{Live: true, Head: head, Hashes: make([]Hash, MaxProofHashes)},
	}
}

func TestProofRoundTrip(t *testing.T) {
	for _, p := range sampleProofs() {
		b := p.Append(nil)
		if len(b) != p.Len() || len(b) > MaxProofSize {
			t.Fatalf("Len %d, encoded %d", p.Len(), len(b))
		}
		q, err := ParseProof(b)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(q.Append(nil), b) {
			t.Fatal("re-encoding differs")
		}
	}
}

func TestProofTruncated(t *testing.T) {
	for _, p := range sampleProofs() {
		b := p.Append(nil)
		for i := 0; i < len(b); i++ {
			if _, err := ParseProof(b[:i]); err == nil {
				t.Fatalf("prefix %d of %d parsed", i, len(b))
			}
		}
		if _, err := ParseProof(append(b, 0)); err == nil {
			t.Fatal("trailing byte accepted")
		}
	}
	if _, err := ParseProof([]byte{9, 0}); err == nil {
		t.Fatal("unknown kind accepted")
	}
	over := append([]byte{KindStatic, MaxProofHashes + 1}, make([]byte, (MaxProofHashes+1)*HashSize)...)
	if _, err := ParseProof(over); err == nil {
		t.Fatal("too many hashes accepted")
	}
}

func FuzzProof(f *testing.F) {
	for _, p := range sampleProofs() {
		f.Add(p.Append(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseProof(b)
		if err != nil {
			return
		}
		enc := p.Append(nil)
		if !bytes.Equal(enc, b) || p.Len() != len(enc) {
			t.Fatalf("round trip: %x -> %x", b, enc)
		}
	})
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
