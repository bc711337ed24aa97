// Package content is veil's content-integrity model: how a publisher turns
// bytes into 498-byte chunks, a Merkle tree, a signed descriptor and (for
// live streams) signed heads, and how a requester checks a range of chunks
// against them before storing, serving or playing a byte.
//
// It is pure: no I/O, no clock, no goroutines. chunkstore wraps it with a
// bbolt store; ordb and window call it through chunkstore.
//
// # Hash and tree shape
//
// SHA-256 (crypto/sha256), one chunk per leaf, chosen from measurements on
// the project's 2-core AMD EPYC (medians of 5; it does have SHA-NI, which
// Go uses; GODEBUG=cpu.sha=off drops SHA-256 to ~290 MB/s on 499 bytes):
//
//	input            SHA-256   BLAKE2b-256  BLAKE3 (zeebo)  BLAKE3 (lukechampine)
//	499 B (leaf)     1075      529          495             335   MB/s
//	65 B (parent)     503      239          251             266   MB/s
//	31872 B (64 ch.) 1067      401          2797            487   MB/s
//
// One-chunk leaves cost ~0.59 us a chunk (leaf + one parent): the tree runs
// at ~840 MB/s, 3-7x what bbolt stores with fsync here, so verification
// never limits a download. 64-chunk leaves with BLAKE3 would hash ~3x
// faster, but a DB_DATA could then only be checked with its 63 neighbours,
// and GETs that start or stop mid-group could not be verified; that is not
// worth a dependency and a coarser check.
//
//	leaf (static)  = SHA-256(0x00 || chunk)
//	leaf (live)    = SHA-256(0x02 || timestamp 4B BE || chunk)
//	parent         = SHA-256(0x01 || left || right)
//	empty content  = SHA-256(0x03)
//
// The tree over N leaves has the RFC 6962 shape: a node over leaves [a, b)
// splits at a+k, k the largest power of two below b-a. A node's hash thus
// depends only on the leaves it covers, so a hash learned for the span
// [a, b) stays valid as a live stream grows.
//
// # Range proofs
//
// A proof for chunks [lo, hi) of a tree of N leaves lists, left to right,
// the hashes of the maximal subtrees that do not meet [lo, hi) but whose
// parent does. The verifier rebuilds the root from the chunks and those
// hashes. A proof holds at most 2*ceil(log2 N) hashes: 48 for 4 GB.
//
// Wire form (the bytes of a DB_PROOF; proto.MerkleProof parses and encodes
// it):
//
//	[kind 1B]  0 = static content, 1 = live stream
//	[head 108B, live only: length 8B | timestamp 4B | root 32B | signature 64B]
//	[count 1B][count x 32B hashes]
//
// # Descriptor and hash_name
//
// The descriptor is proto.DBConnected with Root = the Merkle root (static)
// or empty (live). Its signature is Ed25519 over DescriptorContext ||
// AppendSigned. hash_name = the first 20 bytes of SHA-256 of its full
// encoding.
//
// # Live streams
//
// Live chunks are full 498-byte chunks, each bound to the second it was
// appended (the leaf hashes the timestamp, so DB_DATA's timestamp field is
// authenticated). As it appends, the publisher signs a Head (length,
// timestamp, root) over HeadContext || hash_name || length || timestamp ||
// root; a range proof for a live stream carries the head it was built on.
package content
