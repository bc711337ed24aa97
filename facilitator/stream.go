package facilitator

import (
	"errors"
	"fmt"

	"veil/proto"
)

// Stream is a circuit stream carrying DB_* messages: whole relay cells with
// their command. *circuits.Stream satisfies it (and so does any
// ordb.CellStream).
type Stream interface {
	// ReadCell reads the next cell's command and data into buf, which
	// holds proto.RelayDataSize bytes.
	ReadCell(buf []byte) (proto.RelayCommand, int, error)
	// WriteCell sends one cell of a data-bearing relay command.
	WriteCell(cmd proto.RelayCommand, data []byte) error
	Close() error
}

// ServiceDest is the stream destination at which a facilitator node serves
// DB_QUERY for torrents: the last hop of the circuits ORDBs build to it.
const ServiceDest = "facilitator"

// ErrProtocol reports a peer that broke the DB_* exchange.
var ErrProtocol = errors.New("facilitator: protocol violation")

// msgConn sends and receives whole DB_* messages on a Stream, with the
// framing of package proto. Not safe for concurrent use of one direction.
type msgConn struct {
	s      Stream
	asm    proto.Assembler
	in     [proto.RelayDataSize]byte
	out    [proto.RelayDataSize]byte
	enc    []byte
	framer proto.DBFramer
}

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

// recv returns the next whole message, parsed; its byte slices are valid
// until the next recv.
func (c *msgConn) recv() (proto.DBMessage, error) {
	for {
		cmd, n, err := c.s.ReadCell(c.in[:])
		if err != nil {
			return nil, err
		}
		if !cmd.IsDB() {
			return nil, fmt.Errorf("%w: %v cell on a DB stream", ErrProtocol, cmd)
		}
		mcmd, msg, err := c.asm.Feed(cmd, c.in[:n])
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		if msg != nil {
			m, err := proto.ParseDB(mcmd, msg)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
			}
			return m, nil
		}
	}
}
