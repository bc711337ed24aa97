package content

import (
	"fmt"

	"veil/proto"
)

// Proof sizes: proto fixes the encoding (see proto.MerkleProof).
const (
	MaxProofSize   = proto.MaxProofSize
	HeadSize       = proto.LiveHeadSize
	MaxProofHashes = proto.MaxProofHashes
)

// Proof kinds (the first byte of an encoded Proof).
const (
	KindStatic = proto.ProofStatic
	KindLive   = proto.ProofLive
)

// Proof is a range proof as it travels in a DB_PROOF: the sibling hashes
// and, for a live stream, the signed head they lead to. Which chunks it
// covers travels beside it (DB_PROOF's chunk nb and nb chunks). Verify and
// VerifyRange say how the hashes combine.
type Proof = proto.MerkleProof

// Head is what a live publisher signs as it appends: the stream has Length
// chunks whose tree has Root, as of Timestamp (unix seconds). SignHead and
// CheckHead sign and check it.
type Head = proto.LiveHead

// ParseProof decodes a proof (proto.ParseMerkleProof) and refuses a live
// head longer than MaxChunks. Errors wrap ErrProofMalformed. Nothing
// aliases b.
func ParseProof(b []byte) (Proof, error) {
	p, err := proto.ParseMerkleProof(b)
	if err != nil {
		return Proof{}, fmt.Errorf("%w: %w", ErrProofMalformed, err)
	}
	if p.Live {
		if err := checkHeadLength(p.Head); err != nil {
			return Proof{}, err
		}
	}
	return p, nil
}

// ParseHead decodes exactly HeadSize bytes (proto.ParseLiveHead) and
// refuses a head longer than MaxChunks. Errors wrap ErrProofMalformed.
func ParseHead(b []byte) (Head, error) {
	h, err := proto.ParseLiveHead(b)
	if err != nil {
		return Head{}, fmt.Errorf("%w: %w", ErrProofMalformed, err)
	}
	if err := checkHeadLength(h); err != nil {
		return Head{}, err
	}
	return h, nil
}

func checkHeadLength(h Head) error {
	if h.Length > MaxChunks {
		return fmt.Errorf("%w: head length %d > %d", ErrProofMalformed, h.Length, uint64(MaxChunks))
	}
	return nil
}
