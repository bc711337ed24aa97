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
	ErrForked   = errors.New("chunkstore: publisher signed two heads of the same length")
	ErrCorrupt  = errors.New("chunkstore: stored data is corrupt")
	ErrSeek     = errors.New("chunkstore: bad seek")
)
