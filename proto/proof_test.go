package proto

import (
	"bytes"
	"errors"
	"testing"
)

func sampleLiveHead() LiveHead {
	h := LiveHead{Length: 12345, Timestamp: 99, Root: TreeHash{1, 2, 3}}
	h.Signature[0], h.Signature[SignatureSize-1] = 7, 8
	return h
}

func sampleProofs() []MerkleProof {
	var hs []TreeHash
	for i := range 5 {
		hs = append(hs, TreeHash(fill(TreeHashSize, byte(i*40))))
	}
	head := sampleLiveHead()
	return []MerkleProof{
		{},
		{Hashes: hs},
		{Live: true, Head: head},
		{Live: true, Head: head, Hashes: hs[:3]},
		{Live: true, Head: head, Hashes: make([]TreeHash, MaxProofHashes)},
		{Live: true, Head: head, From: 7, Consistency: hs[:2], Hashes: hs[:3]},
		{Live: true, Head: head, From: head.Length - 1, Consistency: make([]TreeHash, MaxConsistencyHashes), Hashes: make([]TreeHash, MaxProofHashes)},
	}
}

func FuzzMerkleProof(f *testing.F) {
	fuzzWire(f, sampleProofs(), func(b []byte) (MerkleProof, error) {
		p, err := ParseMerkleProof(b)
		if err == nil && (len(p.Hashes) > MaxProofHashes || len(p.Consistency) > MaxConsistencyHashes) {
			panic("parsed a proof over MaxProofHashes or MaxConsistencyHashes")
		}
		return p, err
	}, false)
}

func FuzzLiveHead(f *testing.F) {
	fuzzWire(f, []LiveHead{sampleLiveHead(), {}}, ParseLiveHead, false)
}

func TestProofRoundTrip(t *testing.T) {
	for _, p := range sampleProofs() {
		b := p.Append(nil)
		if len(b) != p.Len() || len(b) > MaxProofSize {
			t.Fatalf("Len %d, encoded %d", p.Len(), len(b))
		}
		q, err := ParseMerkleProof(b)
		if err != nil {
			t.Fatal(err)
		}
		if q.Live != p.Live || q.Head != p.Head || len(q.Hashes) != len(p.Hashes) {
			t.Fatalf("parsed %+v, want %+v", q, p)
		}
		for i := range q.Hashes {
			if q.Hashes[i] != p.Hashes[i] {
				t.Fatalf("hash %d differs", i)
			}
		}
		// Nothing aliases the input.
		clear(b)
		if len(q.Hashes) > 0 && q.Hashes[len(q.Hashes)-1] != p.Hashes[len(p.Hashes)-1] {
			t.Fatal("parsed hashes alias the input")
		}
	}
}

// TestProofTruncated feeds every proper prefix of each valid proof and of
// a live head: each must fail with ErrTruncated.
func TestProofTruncated(t *testing.T) {
	for _, p := range sampleProofs() {
		b := p.Append(nil)
		for i := range len(b) {
			if _, err := ParseMerkleProof(b[:i]); !errors.Is(err, ErrTruncated) {
				t.Fatalf("proof prefix %d/%d: %v", i, len(b), err)
			}
		}
	}
	h := sampleLiveHead().Append(nil)
	for i := range len(h) {
		if _, err := ParseLiveHead(h[:i]); !errors.Is(err, ErrTruncated) {
			t.Fatalf("head prefix %d/%d: %v", i, len(h), err)
		}
	}
}

func TestProofExactBytes(t *testing.T) {
	p := MerkleProof{Hashes: []TreeHash{{0: 0xaa}}}
	want := unhex(t, "00 01 aa00000000000000000000000000000000000000000000000000000000000000")
	if got := p.Append(nil); !bytes.Equal(got, want) {
		t.Fatalf("static proof:\n got  %x\n want %x", got, want)
	}
	h := LiveHead{Length: 0x0102, Timestamp: 0x0a0b0c0d, Root: TreeHash{31: 0xee}, Signature: [SignatureSize]byte{0: 0x55}}
	want = unhex(t, "0000000000000102 0a0b0c0d"+
		" 00000000000000000000000000000000000000000000000000000000000000ee"+
		" 55000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000")
	if got := h.Append(nil); !bytes.Equal(got, want) || len(got) != LiveHeadSize {
		t.Fatalf("live head:\n got  %x\n want %x", got, want)
	}
	if got := (MerkleProof{Live: true, Head: h}).Append(nil); !bytes.Equal(got, append(append([]byte{ProofLive}, want...), 0)) {
		t.Fatalf("live proof: %x", got)
	}
}

func TestLiveHeadAppendSigned(t *testing.T) {
	h := sampleLiveHead()
	name := hashName(0x44)
	got := h.AppendSigned([]byte("ctx"), name)
	want := append(append([]byte("ctx"), name[:]...), h.Append(nil)[:LiveHeadSize-SignatureSize]...)
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendSigned:\n got  %x\n want %x", got, want)
	}
	h.Signature[3] ^= 1
	if !bytes.Equal(h.AppendSigned([]byte("ctx"), name), want) {
		t.Fatal("the signed bytes cover the signature")
	}
}

func TestProofRefusals(t *testing.T) {
	over := append([]byte{ProofStatic, MaxProofHashes + 1}, make([]byte, (MaxProofHashes+1)*TreeHashSize)...)
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"unknown kind", []byte{9, 0}, ErrBadValue},
		{"too many hashes", over, ErrTooLong},
		{"count over the limit, no hashes", []byte{ProofStatic, 255}, ErrTooLong},
		{"over MaxProofSize", make([]byte, MaxProofSize+1), ErrTooLong},
		{"trailing byte", append(sampleProofs()[1].Append(nil), 0), ErrTrailing},
		{"hash bytes past the count", append([]byte{ProofStatic, 0}, make([]byte, TreeHashSize)...), ErrTrailing},
	}
	for _, tt := range tests {
		if _, err := ParseMerkleProof(tt.b); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	if _, err := ParseLiveHead(make([]byte, LiveHeadSize+1)); !errors.Is(err, ErrTrailing) {
		t.Errorf("long head: %v", err)
	}
}

// TestProofAllocatesOnlyTheHashes: parsing allocates the hash slice, once.
func TestProofAllocatesOnlyTheHashes(t *testing.T) {
	b := sampleProofs()[3].Append(nil)
	if n := testing.AllocsPerRun(50, func() { _, _ = ParseMerkleProof(b) }); n != 1 {
		t.Errorf("%v allocations for a 3-hash proof", n)
	}
}

// TestProofConsistentBad: a consistent live proof must name a shorter
// length than its head and carry 1..64 hashes; a DB_QUERY's known length,
// when sent, is nonzero.
func TestProofConsistentBad(t *testing.T) {
	head := sampleLiveHead()
	good := MerkleProof{Live: true, Head: head, From: 5, Consistency: []TreeHash{{1}}}
	b := good.Append(nil)
	at := 1 + LiveHeadSize
	for name, mut := range map[string]func([]byte){
		"from 0":          func(b []byte) { clear(b[at : at+8]) },
		"from = length":   func(b []byte) { copy(b[at:], head.Append(nil)[:8]) },
		"no hashes":       func(b []byte) { b[at+8] = 0 },
		"too many hashes": func(b []byte) { b[at+8] = MaxConsistencyHashes + 1 },
	} {
		bad := bytes.Clone(b)
		mut(bad)
		if _, err := ParseMerkleProof(bad); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
	q := DBQuery{HashName: HashName{1}, RequestID: 1}.Append(nil)
	if _, err := ParseDBQuery(append(q, make([]byte, 8)...)); !errors.Is(err, ErrBadValue) {
		t.Errorf("known length 0 sent: %v", err)
	}
	if _, err := ParseDBQuery(append(q, 1, 2, 3)); err == nil {
		t.Errorf("3 bytes of known length parsed")
	}
}
