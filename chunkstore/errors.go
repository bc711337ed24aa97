package chunkstore

import "errors"

// Errors of this package, wrapped with details. Verification failures wrap
// the content package's errors too (content.ErrRootMismatch ...).
var (
	ErrConfig   = errors.New("chunkstore: bad config")
	ErrLocked   = errors.New("chunkstore: store is locked by another process")
	ErrClosed   = errors.New("chunkstore: store closed")
	ErrNotFound = errors.New("chunkstore: content not found")
	ErrMissing  = errors.New("chunkstore: chunk not stored")
	ErrEvicted  = errors.New("chunkstore: live chunk evicted")
	ErrForked   = errors.New("chunkstore: publisher signed heads of two different histories")
	// ErrNoConsistency: a head longer than ours came without a proof
	// that it extends ours (a range starting at our length, or a
	// consistency proof from it).
	ErrNoConsistency = errors.New("chunkstore: longer head without a consistency proof from ours")
	// ErrStaleHead: a head older than ours that cannot be shown to be a
	// prefix of it, or one whose time runs against its length (a replay).
	ErrStaleHead = errors.New("chunkstore: stale live head")
	ErrCorrupt   = errors.New("chunkstore: stored data is corrupt")
	ErrSeek      = errors.New("chunkstore: bad seek")
)
