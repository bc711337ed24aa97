package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Multi-cell framing of DB_* messages. Every DB_* message travels over one
// or more consecutive relay cells of one stream, always framed the same way
// so a receiver needs no other hint:
//
//	first cell:   relay command = the message's (DB_QUERY, DB_DATA, ...)
//	              data = [total message length 4B][first min(total, 494) bytes]
//	continuation: relay command = DB_MORE
//	              data = [next min(remaining, 498) bytes]
//
// Every cell but the last is full, so a message has exactly one framing.
const (
	// DBFrameHeaderSize is the total-length prefix of a message's first cell.
	DBFrameHeaderSize = 4
	// DBFirstFrameData is the most message bytes the first cell carries.
	DBFirstFrameData = RelayDataSize - DBFrameHeaderSize // 494
)

// ErrFraming reports relay cells that do not follow the DB_* framing: a
// DB_MORE with no message started, a new message started while one is
// incomplete, or a cell that is not full while more bytes are due.
var ErrFraming = errors.New("proto: bad DB message framing")

// assemblerKeep bounds the reassembly buffer an idle Assembler keeps for
// reuse; larger buffers are dropped once their message is delivered, so an
// idle stream holds at most this much.
const assemblerKeep = 64 << 10

// DBFrameCells returns how many relay cells a message of n bytes takes.
func DBFrameCells(n int) int {
	if n <= DBFirstFrameData {
		return 1
	}
	return 1 + (n-DBFirstFrameData+RelayDataSize-1)/RelayDataSize
}

// DBFramer splits one DB_* message into relay cell payloads, written in
// place so the sender can use pooled cells (see Cell.PayloadArray). The zero
// value is done; Reset starts a message. It does not copy the message: msg
// must stay unchanged until the last cell is written.
//
//	var f proto.DBFramer
//	if err := f.Reset(hdr, proto.RelayDBData, msg); err != nil { ... }
//	for !f.Done() {
//		c := proto.GetCell()
//		f.Next(c.PayloadArray())
//		...
//	}
type DBFramer struct {
	h       RelayHeader
	msg     []byte
	off     int  // message bytes already framed
	started bool // the first cell has been written
}

// Reset starts framing msg under relay command cmd (a DB_* command other
// than DB_MORE). Recognized, StreamID and Digest of every cell come from h;
// its Command and Length are ignored.
func (f *DBFramer) Reset(h RelayHeader, cmd RelayCommand, msg []byte) error {
	*f = DBFramer{}
	if !cmd.IsDB() || cmd == RelayDBMore {
		return fmt.Errorf("db frame: %w: %v is not a DB message command", ErrUnknownCommand, cmd)
	}
	if len(msg) == 0 {
		return fmt.Errorf("db frame: %w: empty message", ErrBadLength)
	}
	if len(msg) > MaxDBMessage {
		return fmt.Errorf("db frame: %w: %d bytes > %d", ErrTooLong, len(msg), MaxDBMessage)
	}
	h.Command = cmd
	f.h, f.msg = h, msg
	return nil
}

// Done reports whether every cell of the message has been written.
func (f *DBFramer) Done() bool { return f.off == len(f.msg) && (f.started || len(f.msg) == 0) }

// Cells returns how many cells the whole message takes (0 when reset with
// nothing).
func (f *DBFramer) Cells() int {
	if len(f.msg) == 0 {
		return 0
	}
	return DBFrameCells(len(f.msg))
}

// Next writes the next cell's relay payload into p (unused data bytes
// zeroed, digest as given to Reset) and reports whether it wrote one.
func (f *DBFramer) Next(p *[CellPayloadSize]byte) bool {
	cmd, data, ok := f.NextData((*[RelayDataSize]byte)(p[relayOffData:]))
	if !ok {
		return false
	}
	h := f.h
	h.Command, h.Length = cmd, uint16(len(data))
	h.put(p[:])
	clear(p[relayOffData+len(data):])
	return true
}

// NextData writes the next cell's data, without a relay header, into buf
// and returns the cell's relay command and data (a prefix of buf). It is
// for senders whose stream adds the relay header itself; ok is false once
// the message is done.
func (f *DBFramer) NextData(buf *[RelayDataSize]byte) (cmd RelayCommand, data []byte, ok bool) {
	if f.Done() {
		return 0, nil, false
	}
	var n int
	if !f.started {
		n = min(len(f.msg), DBFirstFrameData)
		binary.BigEndian.PutUint32(buf[:], uint32(len(f.msg)))
		copy(buf[DBFrameHeaderSize:], f.msg[:n])
		cmd, data = f.h.Command, buf[:DBFrameHeaderSize+n]
		f.started = true
	} else {
		n = min(len(f.msg)-f.off, RelayDataSize)
		copy(buf[:], f.msg[f.off:f.off+n])
		cmd, data = RelayDBMore, buf[:n]
	}
	f.off += n
	return cmd, data, true
}

// AppendDBFrames appends the relay payloads (CellPayloadSize bytes each)
// that carry msg under relay command cmd, taking Recognized, StreamID and
// Digest from h.
func AppendDBFrames(b []byte, h RelayHeader, cmd RelayCommand, msg []byte) ([]byte, error) {
	var f DBFramer
	if err := f.Reset(h, cmd, msg); err != nil {
		return b, err
	}
	for !f.Done() {
		start := len(b)
		b = append(b, make([]byte, CellPayloadSize)...)
		f.Next((*[CellPayloadSize]byte)(b[start:]))
	}
	return b, nil
}

// Assembler rebuilds DB_* messages from the relay cells of one stream. It
// is a pure state machine, not safe for concurrent use; keep one per
// stream. The zero value is ready to use.
//
// After an error the partial message is dropped and the Assembler is idle
// again; the caller should end the stream, since its peer broke the framing.
type Assembler struct {
	// Max bounds the messages this Assembler accepts, in bytes: a message
	// announced longer is refused at its first cell, before any of it is
	// buffered. 0 (and anything over it) means MaxDBMessage. A server that
	// only expects queries sets it to what a query can be.
	Max int

	cmd  RelayCommand
	want int // announced total; 0 when idle
	buf  []byte
}

// Pending reports whether a message is partly received.
func (a *Assembler) Pending() bool { return a.want != 0 }

// Reset drops any partial message.
func (a *Assembler) Reset() {
	a.cmd, a.want = 0, 0
	if cap(a.buf) > assemblerKeep {
		a.buf = nil
	}
	a.buf = a.buf[:0]
}

// Feed takes the command and data of the stream's next DB_* relay cell. When
// the cell completes a message it returns the message's command and bytes;
// otherwise msg is nil. msg aliases data or the Assembler's buffer: it is
// valid until the next call to Feed or Reset, and while data is unchanged.
//
// The announced length is checked against Max (MaxDBMessage) before
// anything is allocated, and the buffer grows only as bytes arrive.
func (a *Assembler) Feed(cmd RelayCommand, data []byte) (RelayCommand, []byte, error) {
	cmd, msg, err := a.feed(cmd, data)
	if err != nil {
		a.Reset()
		return 0, nil, err
	}
	return cmd, msg, nil
}

func (a *Assembler) feed(cmd RelayCommand, data []byte) (RelayCommand, []byte, error) {
	if !cmd.IsDB() {
		return 0, nil, fmt.Errorf("db frame: %w: %v is not a DB command", ErrUnknownCommand, cmd)
	}
	if len(data) > RelayDataSize {
		return 0, nil, fmt.Errorf("db frame: %w: %d data bytes > %d", ErrTooLong, len(data), RelayDataSize)
	}
	if cmd == RelayDBMore {
		if a.want == 0 {
			return 0, nil, fmt.Errorf("db frame: %w: DB_MORE with no message started", ErrFraming)
		}
		rem := a.want - len(a.buf)
		if len(data) > rem {
			return 0, nil, fmt.Errorf("db frame: %w: %d bytes when %d remain", ErrBadLength, len(data), rem)
		}
		if len(data) != min(rem, RelayDataSize) {
			return 0, nil, fmt.Errorf("db frame: %w: continuation of %d bytes, want %d", ErrFraming, len(data), min(rem, RelayDataSize))
		}
		a.buf = append(a.grow(len(data)), data...)
		if len(a.buf) < a.want {
			return 0, nil, nil
		}
		cmd, msg := a.cmd, a.buf
		a.cmd, a.want = 0, 0
		if cap(a.buf) > assemblerKeep {
			a.buf = nil
		} else {
			a.buf = a.buf[:0]
		}
		return cmd, msg, nil
	}
	if a.want != 0 {
		return 0, nil, fmt.Errorf("db frame: %w: %v started while %v is incomplete", ErrFraming, cmd, a.cmd)
	}
	if len(data) < DBFrameHeaderSize {
		return 0, nil, fmt.Errorf("db frame header: %w (%d bytes)", ErrTruncated, len(data))
	}
	total := binary.BigEndian.Uint32(data)
	body := data[DBFrameHeaderSize:]
	limit := MaxDBMessage
	if a.Max > 0 && a.Max < limit {
		limit = a.Max
	}
	switch {
	case total == 0:
		return 0, nil, fmt.Errorf("db frame: %w: empty message", ErrBadLength)
	case total > uint32(limit):
		return 0, nil, fmt.Errorf("db frame: %w: %v of %d bytes > %d", ErrTooLong, cmd, total, limit)
	case uint32(len(body)) > total:
		return 0, nil, fmt.Errorf("db frame: %w: %d bytes for a message of %d", ErrBadLength, len(body), total)
	case len(body) != min(int(total), DBFirstFrameData):
		return 0, nil, fmt.Errorf("db frame: %w: first cell of %d bytes, want %d", ErrFraming, len(body), min(int(total), DBFirstFrameData))
	}
	if int(total) == len(body) {
		return cmd, body, nil
	}
	a.cmd, a.want = cmd, int(total)
	a.buf = append(a.grow(len(body)), body...)
	return 0, nil, nil
}

// grow makes room for n more bytes, never beyond the announced total, and
// at most doubling what has arrived so far.
func (a *Assembler) grow(n int) []byte {
	need := len(a.buf) + n
	if need <= cap(a.buf) {
		return a.buf
	}
	c := min(a.want, max(need, 2*cap(a.buf), 4096))
	nb := make([]byte, len(a.buf), c)
	copy(nb, a.buf)
	return nb
}
