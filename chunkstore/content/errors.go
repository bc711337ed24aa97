package content

import "errors"

// Errors of this package, wrapped with details. Compare with errors.Is.
var (
	ErrBadRange       = errors.New("content: bad chunk range")
	ErrBadChunk       = errors.New("content: bad chunk length")
	ErrRootMismatch   = errors.New("content: chunks do not match the Merkle root")
	ErrProofShort     = errors.New("content: proof has too few hashes")
	ErrProofLong      = errors.New("content: proof has too many hashes")
	ErrNoNode         = errors.New("content: tree node unknown")
	ErrBadSignature   = errors.New("content: bad signature")
	ErrBadDescriptor  = errors.New("content: bad descriptor")
	ErrProofMalformed = errors.New("content: malformed proof")
	ErrKindMismatch   = errors.New("content: proof kind does not match the content")
	ErrTooLarge       = errors.New("content: content too large")
)
