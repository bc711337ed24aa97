package ordb

import (
	"errors"
	"fmt"

	"veil/proto"
)

// CellStream is the part of a circuit stream the DB_* exchange needs:
// whole cells with their relay command. *circuits.Stream satisfies it.
type CellStream interface {
	// ReadCell reads the next cell's command and data into buf, which
	// holds proto.RelayDataSize bytes.
	ReadCell(buf []byte) (proto.RelayCommand, int, error)
	// WriteCell sends one cell of a data-bearing relay command.
	WriteCell(cmd proto.RelayCommand, data []byte) error
	Close() error
}

// Errors of the DB_* exchange.
var (
	ErrUnavailable = errors.New("ordb: content unavailable")
	ErrProtocol    = errors.New("ordb: protocol violation by peer")
	ErrMismatch    = errors.New("ordb: descriptor does not hash to the requested hash_name")
)

// msgConn sends and receives whole DB_* messages on a CellStream. Not safe
// for concurrent use of the same direction.
type msgConn struct {
	s      CellStream
	asm    proto.Assembler // asm.Max: longest message accepted
	in     [proto.RelayDataSize]byte
	out    [proto.RelayDataSize]byte
	enc    []byte
	framer proto.DBFramer
}

func newMsgConn(s CellStream) *msgConn { return &msgConn{s: s} }

// send frames m over as many cells as it takes.
func (c *msgConn) send(m proto.DBMessage) error {
	c.enc = m.Append(c.enc[:0])
	if err := c.framer.Reset(proto.RelayHeader{}, m.Command(), c.enc); err != nil {
		return err
	}
	for {
		cmd, data, ok := c.framer.NextData(&c.out)
		if !ok {
			return nil
		}
		if err := c.s.WriteCell(cmd, data); err != nil {
			return fmt.Errorf("sending %v: %w", m.Command(), err)
		}
	}
}

// recv returns the next whole message. The message is valid until the next
// recv.
func (c *msgConn) recv() (proto.RelayCommand, []byte, error) {
	for {
		cmd, n, err := c.s.ReadCell(c.in[:])
		if err != nil {
			return 0, nil, err
		}
		if !cmd.IsDB() {
			return 0, nil, fmt.Errorf("%w: %v cell on a DB stream", ErrProtocol, cmd)
		}
		mcmd, msg, err := c.asm.Feed(cmd, c.in[:n])
		if err != nil {
			return 0, nil, fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		if msg != nil {
			return mcmd, msg, nil
		}
	}
}
