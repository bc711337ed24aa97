package proto

import (
	"encoding/binary"
	"fmt"
	"sync"
)

// Command is a link cell command (Tor link protocol 4+ numbering).
type Command uint8

// Fixed-size cell commands.
const (
	CmdPadding    Command = 0
	CmdRelay      Command = 3
	CmdDestroy    Command = 4
	CmdRelayEarly Command = 9
	CmdCreate2    Command = 10
	CmdCreated2   Command = 11
)

// Variable-length cell commands (>= 128, as in Tor). veil's own.
const (
	// CmdDHT carries one DHT RPC (PING, FIND_NODE, ...) directly over a link.
	CmdDHT Command = 160
)

// IsVariable reports whether cells with this command carry a 2-byte length
// and a variable payload instead of the fixed 509 bytes.
func (c Command) IsVariable() bool { return c >= 128 }

// Known reports whether c is a command veil understands.
func (c Command) Known() bool {
	switch c {
	case CmdPadding, CmdRelay, CmdDestroy, CmdRelayEarly, CmdCreate2, CmdCreated2, CmdDHT:
		return true
	}
	return false
}

func (c Command) String() string {
	switch c {
	case CmdPadding:
		return "PADDING"
	case CmdRelay:
		return "RELAY"
	case CmdDestroy:
		return "DESTROY"
	case CmdRelayEarly:
		return "RELAY_EARLY"
	case CmdCreate2:
		return "CREATE2"
	case CmdCreated2:
		return "CREATED2"
	case CmdDHT:
		return "DHT"
	}
	return fmt.Sprintf("CMD(%d)", uint8(c))
}

// Cell is one fixed-size link cell, laid out exactly as on the wire:
//
//	CircID 4 | Command 1 | Payload 509
//
// Per-hop crypto runs in place on Payload. Cells are passed by pointer; a
// cell taken from the pool (GetCell) is owned by exactly one stage at a time
// and returned with PutCell by the stage that consumes it.
type Cell [CellSize]byte

func (c *Cell) CircID() uint32         { return binary.BigEndian.Uint32(c[0:4]) }
func (c *Cell) SetCircID(id uint32)    { binary.BigEndian.PutUint32(c[0:4], id) }
func (c *Cell) Command() Command       { return Command(c[4]) }
func (c *Cell) SetCommand(cmd Command) { c[4] = byte(cmd) }
func (c *Cell) Payload() []byte        { return c[CellHeaderSize:] }
func (c *Cell) Len() int               { return CellSize }
func (c *Cell) Append(b []byte) []byte { return append(b, c[:]...) }
func (c *Cell) Reset()                 { *c = Cell{} }
func (c *Cell) PayloadArray() *[CellPayloadSize]byte {
	return (*[CellPayloadSize]byte)(c[CellHeaderSize:])
}

// ParseCell copies one fixed-size cell out of b. b must hold exactly
// CellSize bytes and a known fixed-size command.
func ParseCell(b []byte) (*Cell, error) {
	var c Cell
	if err := c.Parse(b); err != nil {
		return nil, err
	}
	return &c, nil
}

// Parse fills c from b without allocating.
func (c *Cell) Parse(b []byte) error {
	if len(b) < CellSize {
		return fmt.Errorf("cell: %w (%d of %d bytes)", ErrTruncated, len(b), CellSize)
	}
	if len(b) > CellSize {
		return fmt.Errorf("cell: %w", ErrTrailing)
	}
	cmd := Command(b[4])
	if !cmd.Known() || cmd.IsVariable() {
		return fmt.Errorf("cell: %w %v", ErrUnknownCommand, cmd)
	}
	copy(c[:], b)
	return nil
}

var cellPool = sync.Pool{New: func() any { return new(Cell) }}

// GetCell returns a zeroed cell from the pool.
func GetCell() *Cell {
	c := cellPool.Get().(*Cell)
	c.Reset()
	return c
}

// PutCell returns c to the pool. The caller must not touch c afterwards.
func PutCell(c *Cell) { cellPool.Put(c) }

// VarCell is a variable-length link cell:
//
//	CircID 4 | Command 1 | Length 2 | Payload Length
//
// Length is at most MaxVarPayload.
type VarCell struct {
	CircID  uint32
	Command Command
	Payload []byte
}

// Len is the encoded size.
func (v VarCell) Len() int { return VarHeaderSize + len(v.Payload) }

// Append encodes v onto b. It panics if the payload exceeds MaxVarPayload:
// building such a cell is a programming error.
func (v VarCell) Append(b []byte) []byte {
	if len(v.Payload) > MaxVarPayload {
		panic("proto: VarCell payload over MaxVarPayload")
	}
	b = binary.BigEndian.AppendUint32(b, v.CircID)
	b = append(b, byte(v.Command))
	b = binary.BigEndian.AppendUint16(b, uint16(len(v.Payload)))
	return append(b, v.Payload...)
}

// ParseVarCell decodes exactly one variable-length cell from b. The payload
// aliases b.
func ParseVarCell(b []byte) (VarCell, error) {
	var v VarCell
	if len(b) < VarHeaderSize {
		return v, fmt.Errorf("var cell header: %w", ErrTruncated)
	}
	v.CircID = binary.BigEndian.Uint32(b)
	v.Command = Command(b[4])
	if !v.Command.IsVariable() || !v.Command.Known() {
		return v, fmt.Errorf("var cell: %w %v", ErrUnknownCommand, v.Command)
	}
	n := int(binary.BigEndian.Uint16(b[5:7]))
	if n > MaxVarPayload {
		return v, fmt.Errorf("var cell: %w (%d > %d)", ErrTooLong, n, MaxVarPayload)
	}
	rest := b[VarHeaderSize:]
	if len(rest) < n {
		return v, fmt.Errorf("var cell payload: %w", ErrTruncated)
	}
	if len(rest) > n {
		return v, fmt.Errorf("var cell: %w", ErrTrailing)
	}
	v.Payload = rest[:n]
	return v, nil
}
