package content

import (
	"crypto/ed25519"
	"fmt"

	"veil/proto"
)

// Range is a run of consecutive chunks [Start, Start+len(Chunks)) as they
// arrive in DB_DATA answers, with the proof from DB_PROOF. Times holds each
// live chunk's timestamp (DB_DATA's stamp); it is ignored for static content.
type Range struct {
	Start  uint64
	Chunks [][]byte
	Times  []uint32
	Proof  Proof
}

// Verified is what VerifyRangeOf learned from a range that checked out.
type Verified struct {
	Leaves []Hash // the leaf hashes of the chunks, in order
	Nodes  []Node // proof hashes and computed nodes of span >= keepSpan
	N      uint64 // size of the tree the range was checked against
}

// Verify checks r against descriptor d (already checked by CheckDescriptor)
// whose hash_name is name. keepSpan is as for VerifyRange.
func Verify(d proto.DBConnected, name proto.HashName, r Range, keepSpan uint64) (Verified, error) {
	live := d.Flags&proto.FlagLive != 0
	if r.Proof.Live != live {
		return Verified{}, fmt.Errorf("%w: live proof %v for live content %v", ErrKindMismatch, r.Proof.Live, live)
	}
	var root Hash
	var n uint64
	if live {
		if err := CheckHead(ed25519.PublicKey(d.PublicKey), name, r.Proof.Head); err != nil {
			return Verified{}, err
		}
		root, n = r.Proof.Head.Root, r.Proof.Head.Length
		if len(r.Times) != len(r.Chunks) {
			return Verified{}, fmt.Errorf("%w: %d timestamps for %d chunks", ErrBadChunk, len(r.Times), len(r.Chunks))
		}
	} else {
		root, n = RootOfDescriptor(d), ChunkCount(d.Size)
	}
	if err := checkRange(n, r.Start, r.Start+uint64(len(r.Chunks))); err != nil {
		return Verified{}, err
	}
	leaves := make([]Hash, len(r.Chunks))
	for k, c := range r.Chunks {
		i := r.Start + uint64(k)
		want := ChunkSize
		if !live {
			want = ChunkLen(d.Size, i)
		}
		if len(c) != want {
			return Verified{}, fmt.Errorf("%w: chunk %d has %d bytes, want %d", ErrBadChunk, i, len(c), want)
		}
		if live {
			leaves[k] = LiveLeafHash(r.Times[k], c)
		} else {
			leaves[k] = LeafHash(c)
		}
	}
	nodes, err := VerifyRange(root, n, r.Start, leaves, r.Proof.Hashes, keepSpan)
	if err != nil {
		return Verified{}, err
	}
	return Verified{Leaves: leaves, Nodes: nodes, N: n}, nil
}
