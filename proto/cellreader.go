package proto

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MinCellReaderSize is the smallest buffer a CellReader works with: the
// largest variable-length cell.
const MinCellReaderSize = VarHeaderSize + MaxVarPayload

// CellReader frames the link cells of a byte stream (a link's decrypted TLS
// stream): fixed cells of CellSize bytes follow each other with variable
// cells, whose Length field gives their size, with no other framing (see the
// package comment). It is the one reader of that framing. It reads through
// a buffer of its own, so one read of the source carries many cells, and it
// allocates nothing per cell. Not safe for concurrent use.
type CellReader struct {
	br      *bufio.Reader
	discard int // bytes of the var cell last returned, dropped by the next call
}

// NewCellReader returns a CellReader reading src through a buffer of size
// bytes (at least MinCellReaderSize).
func NewCellReader(src io.Reader, size int) *CellReader {
	return &CellReader{br: bufio.NewReaderSize(src, max(size, MinCellReaderSize))}
}

// Buffered returns the bytes read from the source and not yet framed.
func (r *CellReader) Buffered() int { return r.br.Buffered() - r.discard }

// ReadCell reads the next cell. A fixed cell (PADDING included) is copied
// into c and isVar is false. A variable cell is returned as v with isVar
// true and c untouched; v.Payload aliases the reader's buffer and is valid
// until the next call.
//
// At the end of the source ReadCell returns io.EOF if the stream ended
// between cells and an error wrapping ErrTruncated (and
// io.ErrUnexpectedEOF) if it ended inside one. An unknown command wraps
// ErrUnknownCommand and a variable cell longer than MaxVarPayload wraps
// ErrTooLong: the stream cannot be framed past either. Any other error is
// the source's, as it returned it.
func (r *CellReader) ReadCell(c *Cell) (v VarCell, isVar bool, err error) {
	if r.discard > 0 {
		_, _ = r.br.Discard(r.discard) // buffered already: cannot fail
		r.discard = 0
	}
	hdr, err := r.br.Peek(CellHeaderSize)
	if err != nil {
		return v, false, r.cut(err, len(hdr))
	}
	cmd := Command(hdr[CircIDSize])
	if !cmd.Known() {
		return v, false, fmt.Errorf("link cell: %w %v", ErrUnknownCommand, cmd)
	}
	if !cmd.IsVariable() {
		if _, err := io.ReadFull(r.br, c[:]); err != nil {
			return v, false, r.cut(err, 1)
		}
		return v, false, nil
	}
	if hdr, err = r.br.Peek(VarHeaderSize); err != nil {
		return v, false, r.cut(err, len(hdr))
	}
	n := int(binary.BigEndian.Uint16(hdr[CellHeaderSize:]))
	if n > MaxVarPayload {
		return v, false, fmt.Errorf("link var cell: %w (%d > %d)", ErrTooLong, n, MaxVarPayload)
	}
	b, err := r.br.Peek(VarHeaderSize + n)
	if err != nil {
		return v, false, r.cut(err, len(b))
	}
	if v, err = ParseVarCell(b); err != nil {
		return v, false, fmt.Errorf("link %w", err) // unreachable: checked above
	}
	r.discard = len(b)
	return v, true, nil
}

// cut names a read that stopped after got bytes of a cell.
func (r *CellReader) cut(err error, got int) error {
	switch {
	case errors.Is(err, io.EOF) && got == 0:
		return io.EOF
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("link cell: %w (%w)", ErrTruncated, io.ErrUnexpectedEOF)
	}
	return err
}
