package proto

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// reader walks a message with bounds checks. After the first error every
// read returns zero values and the error sticks, so parsers read straight
// through and check once at the end.
type reader struct {
	b    []byte
	what string
	err  error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b) < n {
		r.fail(fmt.Errorf("%s: %w", r.what, ErrTruncated))
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) byte() uint8 {
	if p := r.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (r *reader) uint16() uint16 {
	if p := r.take(2); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (r *reader) uint32() uint32 {
	if p := r.take(4); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (r *reader) uint64() uint64 {
	if p := r.take(8); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

// lenPrefixed reads a one-byte length then that many bytes, refusing
// lengths over max before touching the data.
func (r *reader) lenPrefixed(max int) []byte {
	n := int(r.byte())
	if r.err != nil {
		return nil
	}
	if n > max {
		r.fail(fmt.Errorf("%s: %w: length %d > %d", r.what, ErrTooLong, n, max))
		return nil
	}
	return r.take(n)
}

// end reports the sticky error, or ErrTrailing if bytes remain.
func (r *reader) end() error {
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%s: %w (%d bytes)", r.what, ErrTrailing, len(r.b))
	}
	return nil
}

// minimalUint reads the Peersm length-prefixed integer: a one-byte length
// (at most max) then a big-endian value with no leading zero byte, so
// that every value has exactly one encoding (0 is the empty value).
func (r *reader) minimalUint(max int, field string) uint64 {
	p := r.lenPrefixed(max)
	if r.err == nil && len(p) > 0 && p[0] == 0 {
		r.fail(fmt.Errorf("%s: %w: %s not minimally encoded", r.what, ErrBadValue, field))
		return 0
	}
	var v uint64
	for _, c := range p {
		v = v<<8 | uint64(c)
	}
	return v
}

// minimalUintLen is the encoded size of appendMinimalUint(nil, v).
func minimalUintLen(v uint64) int { return 1 + (bits.Len64(v)+7)/8 }

// appendMinimalUint appends v as minimalUint reads it.
func appendMinimalUint(b []byte, v uint64) []byte {
	n := minimalUintLen(v) - 1
	b = append(b, byte(n))
	for i := n - 1; i >= 0; i-- {
		b = append(b, byte(v>>(8*i)))
	}
	return b
}

// endPadded is end for a body that fills a fixed cell: the bytes after the
// message are the cell's padding and must all be zero, so that a body has
// one encoding however much padding carries it.
func (r *reader) endPadded() error {
	if r.err != nil {
		return r.err
	}
	for _, c := range r.b {
		if c != 0 {
			return fmt.Errorf("%s: %w (%d bytes of non-zero padding)", r.what, ErrTrailing, len(r.b))
		}
	}
	return nil
}
