package content

import (
	"crypto/sha256"
	"encoding/binary"
	"math/bits"

	"veil/proto"
)

// ChunkSize is the size of every chunk but a static content's last one.
const ChunkSize = proto.ChunkSize

// HashSize is the size of a tree hash (and of a descriptor's Merkle root).
const HashSize = proto.TreeHashSize

// MaxChunks bounds the chunks of one content so that every range proof fits
// MaxProofHashes (2 x 30 levels): 2^30 chunks is ~534 GB.
const MaxChunks = 1 << 30

// Domain-separation prefixes: leaves, parents and the empty tree can never
// hash the same input.
const (
	tagLeaf     = 0x00
	tagParent   = 0x01
	tagLiveLeaf = 0x02
	tagEmpty    = 0x03
)

// Hash is a node of the Merkle tree; proto fixes its encoding.
type Hash = proto.TreeHash

// EmptyRoot is the root of a content with no chunk.
var EmptyRoot = Hash(sha256.Sum256([]byte{tagEmpty}))

// LeafHash hashes one chunk of a static content.
func LeafHash(chunk []byte) Hash {
	var buf [1 + ChunkSize]byte
	if len(chunk) > ChunkSize {
		// Never built by this package; hash it the slow way rather than panic.
		h := sha256.New()
		h.Write([]byte{tagLeaf})
		h.Write(chunk)
		return Hash(h.Sum(nil))
	}
	buf[0] = tagLeaf
	n := copy(buf[1:], chunk)
	return sha256.Sum256(buf[:1+n])
}

// LiveLeafHash hashes one chunk of a live stream with the second (unix) it
// was appended.
func LiveLeafHash(ts uint32, chunk []byte) Hash {
	var buf [1 + 4 + ChunkSize]byte
	if len(chunk) > ChunkSize {
		h := sha256.New()
		h.Write([]byte{tagLiveLeaf})
		h.Write(binary.BigEndian.AppendUint32(nil, ts))
		h.Write(chunk)
		return Hash(h.Sum(nil))
	}
	buf[0] = tagLiveLeaf
	binary.BigEndian.PutUint32(buf[1:], ts)
	n := copy(buf[5:], chunk)
	return sha256.Sum256(buf[:5+n])
}

// ParentHash hashes two children.
func ParentHash(l, r Hash) Hash {
	var buf [1 + 2*HashSize]byte
	buf[0] = tagParent
	copy(buf[1:], l[:])
	copy(buf[1+HashSize:], r[:])
	return sha256.Sum256(buf[:])
}

// split returns where a node over n >= 2 leaves splits: the largest power
// of two strictly below n.
func split(n uint64) uint64 { return 1 << (bits.Len64(n-1) - 1) }

// ChunkCount is the number of chunks of a static content of size bytes.
func ChunkCount(size uint64) uint64 { return (size + ChunkSize - 1) / ChunkSize }

// ChunkLen is the length of chunk i of a static content of size bytes, or 0
// if there is no such chunk.
func ChunkLen(size, i uint64) int {
	n := ChunkCount(size)
	switch {
	case i >= n:
		return 0
	case i < n-1:
		return ChunkSize
	default:
		return int(size - (n-1)*ChunkSize)
	}
}

// RootOf computes the root over leaves (EmptyRoot for none). It is the
// reference the incremental Builder must agree with.
func RootOf(leaves []Hash) Hash {
	if len(leaves) == 0 {
		return EmptyRoot
	}
	return nodeOf(leaves)
}

func nodeOf(leaves []Hash) Hash {
	if len(leaves) == 1 {
		return leaves[0]
	}
	k := split(uint64(len(leaves)))
	return ParentHash(nodeOf(leaves[:k]), nodeOf(leaves[k:]))
}

// Split returns where a node over n >= 2 leaves splits into its children:
// the left child covers the first Split(n) leaves.
func Split(n uint64) uint64 { return split(n) }
