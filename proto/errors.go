package proto

import "errors"

// Errors every parser in this package returns, wrapped with what was being
// parsed. Callers compare with errors.Is.
var (
	ErrTruncated      = errors.New("proto: truncated message")
	ErrTrailing       = errors.New("proto: trailing bytes after message")
	ErrUnknownCommand = errors.New("proto: unknown command")
	ErrTooLong        = errors.New("proto: length exceeds limit")
	ErrBadLength      = errors.New("proto: bad length field")
	ErrBadValue       = errors.New("proto: field value out of range")
)
