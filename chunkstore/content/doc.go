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
// SHA-256 (crypto/sha256). This machine has SHA-NI: SHA-256 hashes 499-byte
// inputs at ~1.4 GB/s against ~560 MB/s for BLAKE2b-256 and ~500 MB/s for
// BLAKE3, so one chunk per leaf costs ~0.49 us (leaf + one parent) and the
// tree runs at ~1 GB/s. Leaves are single chunks, so any single DB_DATA can
// be verified; grouping leaves would only save the parent hashes (~25%).
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
// Wire form (the opaque bytes of a DB_PROOF):
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
