package content

import (
	"crypto/ed25519"
	"errors"
	"math/rand/v2"
	"testing"
)

func TestLiveStream(t *testing.T) {
	priv := testKey(5)
	d, err := NewLiveDescriptor(priv, "video/webm", 100)
	if err != nil {
		t.Fatal(err)
	}
	name := HashNameOf(d)
	w := NewLiveWriter(priv, name, 64, nil)
	r := rand.New(rand.NewPCG(1, 2))
	var chunks [][]byte
	var times []uint32
	var leaves MemTree
	var heads []Head
	for i := 0; i < 700; i++ {
		c := randBytes(r, ChunkSize)
		ts := uint32(1000 + i/50)
		l, err := w.Append(ts, c)
		if err != nil {
			t.Fatal(err)
		}
		chunks, times, leaves = append(chunks, c), append(times, ts), append(leaves, l)
		if i%100 == 99 {
			heads = append(heads, w.Head(ts))
		}
	}
	if _, err := w.Append(1, make([]byte, 10)); !errors.Is(err, ErrBadChunk) {
		t.Fatalf("short live chunk: %v", err)
	}
	for _, h := range heads {
		if err := CheckHead(priv.Public().(ed25519.PublicKey), name, h); err != nil {
			t.Fatal(err)
		}
		for _, sh := range [][2]uint64{{0, 1}, {h.Length - 1, h.Length}, {h.Length - 37, h.Length - 3}, {0, h.Length}} {
			hs, err := BuildProof(h.Length, sh[0], sh[1], leaves[:h.Length].Node)
			if err != nil {
				t.Fatal(err)
			}
			rg := Range{Start: sh[0], Chunks: chunks[sh[0]:sh[1]], Times: times[sh[0]:sh[1]], Proof: Proof{Live: true, Head: h, Hashes: hs}}
			if _, err := Verify(d, name, rg, 64); err != nil {
				t.Fatalf("head %d range %v: %v", h.Length, sh, err)
			}
			// A forged timestamp, head field or signature is refused.
			bad := rg
			bad.Times = append([]uint32(nil), rg.Times...)
			bad.Times[0]++
			if _, err := Verify(d, name, bad, 64); !errors.Is(err, ErrRootMismatch) {
				t.Fatalf("forged timestamp: %v", err)
			}
			for _, mut := range []func(*Head){
				func(h *Head) { h.Length++ },
				func(h *Head) { h.Timestamp++ },
				func(h *Head) { h.Root[3] ^= 8 },
				func(h *Head) { h.Signature[40] ^= 1 },
			} {
				bad := rg
				mut(&bad.Proof.Head)
				if _, err := Verify(d, name, bad, 64); !errors.Is(err, ErrBadSignature) {
					t.Fatalf("forged head: %v", err)
				}
			}
		}
	}
	// A head signed for another stream does not verify for this one.
	other := name
	other[0] ^= 1
	if err := CheckHead(priv.Public().(ed25519.PublicKey), other, heads[0]); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("head replayed on another stream: %v", err)
	}
}
