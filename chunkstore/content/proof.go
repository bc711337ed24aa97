package content

import (
	"encoding/binary"
	"fmt"

	"veil/proto"
)

// Proof sizes. MaxProofSize matches proto.MaxProofSize, the bound DB_PROOF
// puts on its opaque proof bytes.
const (
	MaxProofSize   = proto.MaxProofSize
	HeadSize       = 8 + 4 + HashSize + 64 // length, timestamp, root, signature
	MaxProofHashes = 60                    // 1 + HeadSize + 1 + 60*32 = 2030 <= MaxProofSize
)

// The largest live proof must fit DB_PROOF.
var _ [MaxProofSize - (1 + HeadSize + 1 + MaxProofHashes*HashSize)]struct{}

// Proof kinds (the first byte of an encoded Proof).
const (
	KindStatic uint8 = 0
	KindLive   uint8 = 1
)

// Proof is a range proof as it travels in a DB_PROOF: the sibling hashes
// and, for a live stream, the signed head they lead to. Which chunks it
// covers travels beside it (DB_PROOF's chunk nb and nb chunks).
type Proof struct {
	Live   bool
	Head   Head // live only
	Hashes []Hash
}

// Len is the encoded size.
func (p Proof) Len() int {
	n := 1 + 1 + len(p.Hashes)*HashSize
	if p.Live {
		n += HeadSize
	}
	return n
}

// Append encodes p onto b. p must hold at most MaxProofHashes hashes.
func (p Proof) Append(b []byte) []byte {
	if p.Live {
		b = append(b, KindLive)
		b = p.Head.Append(b)
	} else {
		b = append(b, KindStatic)
	}
	b = append(b, byte(len(p.Hashes)))
	for _, h := range p.Hashes {
		b = append(b, h[:]...)
	}
	return b
}

// ParseProof decodes a proof, refusing more than MaxProofHashes hashes and
// trailing bytes. Nothing aliases b.
func ParseProof(b []byte) (Proof, error) {
	var p Proof
	if len(b) > MaxProofSize {
		return p, fmt.Errorf("%w: %d bytes > %d", ErrProofMalformed, len(b), MaxProofSize)
	}
	if len(b) < 1 {
		return p, fmt.Errorf("%w: truncated", ErrProofMalformed)
	}
	switch b[0] {
	case KindStatic:
		b = b[1:]
	case KindLive:
		if len(b) < 1+HeadSize {
			return p, fmt.Errorf("%w: truncated head", ErrProofMalformed)
		}
		h, err := ParseHead(b[1 : 1+HeadSize])
		if err != nil {
			return p, err
		}
		p.Live, p.Head = true, h
		b = b[1+HeadSize:]
	default:
		return p, fmt.Errorf("%w: unknown kind %d", ErrProofMalformed, b[0])
	}
	if len(b) < 1 {
		return Proof{}, fmt.Errorf("%w: truncated count", ErrProofMalformed)
	}
	n := int(b[0])
	b = b[1:]
	if n > MaxProofHashes {
		return Proof{}, fmt.Errorf("%w: %d hashes > %d", ErrProofMalformed, n, MaxProofHashes)
	}
	if len(b) != n*HashSize {
		return Proof{}, fmt.Errorf("%w: %d hash bytes for %d hashes", ErrProofMalformed, len(b), n)
	}
	if n > 0 {
		p.Hashes = make([]Hash, n)
		for i := range p.Hashes {
			copy(p.Hashes[i][:], b[i*HashSize:])
		}
	}
	return p, nil
}

// Head is what a live publisher signs as it appends: the stream has Length
// chunks whose tree has Root, as of Timestamp (unix seconds).
type Head struct {
	Length    uint64
	Timestamp uint32
	Root      Hash
	Signature [64]byte
}

// Append encodes h onto b (HeadSize bytes).
func (h Head) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, h.Length)
	b = binary.BigEndian.AppendUint32(b, h.Timestamp)
	b = append(b, h.Root[:]...)
	return append(b, h.Signature[:]...)
}

// ParseHead decodes exactly HeadSize bytes.
func ParseHead(b []byte) (Head, error) {
	var h Head
	if len(b) != HeadSize {
		return h, fmt.Errorf("%w: head of %d bytes, want %d", ErrProofMalformed, len(b), HeadSize)
	}
	h.Length = binary.BigEndian.Uint64(b)
	h.Timestamp = binary.BigEndian.Uint32(b[8:])
	copy(h.Root[:], b[12:])
	copy(h.Signature[:], b[12+HashSize:])
	if h.Length > MaxChunks {
		return Head{}, fmt.Errorf("%w: head length %d > %d", ErrProofMalformed, h.Length, uint64(MaxChunks))
	}
	return h, nil
}
