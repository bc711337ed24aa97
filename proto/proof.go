package proto

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// Sizes of Merkle proofs (the proof bytes of a DB_PROOF).
const (
	// TreeHashSize is a node of a content's Merkle tree (SHA-256).
	TreeHashSize = 32
	// LiveHeadSize is a signed live head: length, timestamp, root,
	// signature.
	LiveHeadSize = 8 + 4 + TreeHashSize + SignatureSize
	// MaxProofHashes bounds the sibling hashes of one proof: two paths of
	// 30 levels, enough for 2^30 chunks (~534 GB).
	MaxProofHashes = 60
	// MaxConsistencyHashes bounds a live proof's consistency proof (RFC
	// 6962 proofs for trees of up to 2^30 chunks need fewer).
	MaxConsistencyHashes = 64
)

// The largest live proof must fit DB_PROOF.
var _ [MaxProofSize - (1 + LiveHeadSize + 8 + 1 + MaxConsistencyHashes*TreeHashSize + 1 + MaxProofHashes*TreeHashSize)]struct{}

// Proof kinds: the first byte of an encoded MerkleProof.
const (
	ProofStatic uint8 = 0
	ProofLive   uint8 = 1
	// ProofLiveConsistent is a live proof that also proves its head
	// extends the requester's shorter one (From chunks).
	ProofLiveConsistent uint8 = 2
)

// TreeHash is a node of a content's Merkle tree.
type TreeHash [TreeHashSize]byte

func (h TreeHash) String() string { return hex.EncodeToString(h[:]) }

// MerkleProof is a range proof as it travels in a DB_PROOF: the sibling
// hashes and, for a live stream, the signed head they lead to. Which chunks
// it covers travels beside it (DB_PROOF's chunk nb and nb chunks):
//
//	static: [kind 1B = 0][n 1B = 0..60][n x hash 32B]
//	live:   [kind 1B = 1][LiveHead 108B][n 1B = 0..60][n x hash 32B]
//	live, consistent:
//	        [kind 1B = 2][LiveHead 108B][from 8B = 1..Length-1]
//	        [c 1B = 1..64][c x hash 32B][n 1B = 0..60][n x hash 32B]
//
// The third kind answers a DB_QUERY that named the head length its sender
// holds (DBQuery.Known): the c hashes are the RFC 6962 consistency proof
// that the head's tree extends the tree of its first `from` chunks. How
// the hashes combine is the content layer's business.
type MerkleProof struct {
	Live        bool
	Head        LiveHead // live only
	From        uint64   // live, consistent: the shorter length proved (0: none)
	Consistency []TreeHash
	Hashes      []TreeHash
}

// Len is the encoded size.
func (p MerkleProof) Len() int {
	n := 1 + 1 + len(p.Hashes)*TreeHashSize
	if p.Live {
		n += LiveHeadSize
		if p.From > 0 {
			n += 8 + 1 + len(p.Consistency)*TreeHashSize
		}
	}
	return n
}

// Append encodes p onto b. p must hold at most MaxProofHashes hashes;
// ParseMerkleProof refuses the encoding of more.
func (p MerkleProof) Append(b []byte) []byte {
	if p.Live && p.From > 0 {
		b = append(b, ProofLiveConsistent)
		b = p.Head.Append(b)
		b = binary.BigEndian.AppendUint64(b, p.From)
		b = append(b, byte(len(p.Consistency)))
		for _, h := range p.Consistency {
			b = append(b, h[:]...)
		}
	} else if p.Live {
		b = append(b, ProofLive)
		b = p.Head.Append(b)
	} else {
		b = append(b, ProofStatic)
	}
	b = append(b, byte(len(p.Hashes)))
	for _, h := range p.Hashes {
		b = append(b, h[:]...)
	}
	return b
}

// ParseMerkleProof decodes a proof exactly, refusing more than
// MaxProofSize bytes and more than MaxProofHashes hashes before allocating.
// Nothing aliases b.
func ParseMerkleProof(b []byte) (MerkleProof, error) {
	var p MerkleProof
	if len(b) > MaxProofSize {
		return p, fmt.Errorf("merkle proof: %w: %d bytes > %d", ErrTooLong, len(b), MaxProofSize)
	}
	r := reader{b: b, what: "merkle proof"}
	switch kind := r.byte(); {
	case r.err != nil:
		// Empty input: end reports it.
	case kind == ProofLive:
		p.Live = true
		p.Head = parseLiveHead(&r)
	case kind == ProofLiveConsistent:
		p.Live = true
		p.Head = parseLiveHead(&r)
		p.From = r.uint64()
		c := int(r.byte())
		switch {
		case r.err != nil:
		case p.From == 0 || p.From >= p.Head.Length:
			r.fail(fmt.Errorf("merkle proof: %w: consistency from %d for a head of %d", ErrBadValue, p.From, p.Head.Length))
		case c == 0 || c > MaxConsistencyHashes:
			r.fail(fmt.Errorf("merkle proof: %w: %d consistency hashes (1..%d)", ErrBadValue, c, MaxConsistencyHashes))
		}
		if cs := r.take(c * TreeHashSize); r.err == nil {
			p.Consistency = make([]TreeHash, c)
			for i := range p.Consistency {
				copy(p.Consistency[i][:], cs[i*TreeHashSize:])
			}
		}
	case kind != ProofStatic:
		r.fail(fmt.Errorf("merkle proof: %w: unknown kind %d", ErrBadValue, kind))
	}
	n := int(r.byte())
	if r.err == nil && n > MaxProofHashes {
		r.fail(fmt.Errorf("merkle proof: %w: %d hashes > %d", ErrTooLong, n, MaxProofHashes))
	}
	hs := r.take(n * TreeHashSize)
	if err := r.end(); err != nil {
		return MerkleProof{}, err
	}
	if n > 0 {
		p.Hashes = make([]TreeHash, n)
		for i := range p.Hashes {
			copy(p.Hashes[i][:], hs[i*TreeHashSize:])
		}
	}
	return p, nil
}

// LiveHead is what a live publisher signs as it appends: the stream has
// Length chunks whose tree has Root, as of Timestamp (unix seconds).
// Exactly LiveHeadSize bytes:
//
//	[length 8B][timestamp 4B][root 32B][Ed25519 signature 64B]
type LiveHead struct {
	Length    uint64
	Timestamp uint32
	Root      TreeHash
	Signature [SignatureSize]byte
}

// Len is the encoded size.
func (LiveHead) Len() int { return LiveHeadSize }

// Append encodes h onto b.
func (h LiveHead) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, h.Length)
	b = binary.BigEndian.AppendUint32(b, h.Timestamp)
	b = append(b, h.Root[:]...)
	return append(b, h.Signature[:]...)
}

// AppendSigned appends what the publisher signs for h, binding it to the
// stream name: [hash_name 20B][length 8B][timestamp 4B][root 32B], the
// head without its signature. The signer prefixes its own domain string.
func (h LiveHead) AppendSigned(b []byte, name HashName) []byte {
	b = append(b, name[:]...)
	b = binary.BigEndian.AppendUint64(b, h.Length)
	b = binary.BigEndian.AppendUint32(b, h.Timestamp)
	return append(b, h.Root[:]...)
}

// ParseLiveHead decodes exactly LiveHeadSize bytes.
func ParseLiveHead(b []byte) (LiveHead, error) {
	r := reader{b: b, what: "live head"}
	h := parseLiveHead(&r)
	if err := r.end(); err != nil {
		return LiveHead{}, err
	}
	return h, nil
}

func parseLiveHead(r *reader) LiveHead {
	var h LiveHead
	h.Length = r.uint64()
	h.Timestamp = r.uint32()
	copy(h.Root[:], r.take(TreeHashSize))
	copy(h.Signature[:], r.take(SignatureSize))
	return h
}
