package proto

import "fmt"

// CellStream is the part of a circuit stream the DB_* exchange needs:
// whole relay cells with their command. *circuits.Stream satisfies it.
type CellStream interface {
	// ReadCell reads the next cell's command and data into buf, which
	// holds RelayDataSize bytes.
	ReadCell(buf []byte) (RelayCommand, int, error)
	// WriteCell sends one cell of a data-bearing relay command.
	WriteCell(cmd RelayCommand, data []byte) error
	Close() error
}

// DBConn sends and receives whole DB_* messages on a CellStream, framed
// as above. Not safe for concurrent use of one direction; one goroutine
// may send while another receives.
type DBConn struct {
	s CellStream
	// Asm reassembles what comes in; Asm.Max bounds the messages
	// accepted (a node that only takes queries accepts one cell's worth).
	Asm       Assembler
	violation error // wraps what the peer got wrong
	in, out   [RelayDataSize]byte
	enc       []byte
	framer    DBFramer
}

// NewDBConn returns a DBConn on s whose errors for a peer that breaks the
// exchange wrap violation (the caller's "protocol violation").
func NewDBConn(s CellStream, violation error) DBConn {
	return DBConn{s: s, violation: violation}
}

// Send frames m over as many cells as it takes.
func (c *DBConn) Send(m DBMessage) error {
	c.enc = m.Append(c.enc[:0])
	if err := c.framer.Reset(RelayHeader{}, m.Command(), c.enc); err != nil {
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

// Recv returns the next whole message's command and bytes, valid until
// the next Recv. A cell that is not a DB_* one, or bad framing, is the
// peer's violation.
func (c *DBConn) Recv() (RelayCommand, []byte, error) {
	for {
		cmd, n, err := c.s.ReadCell(c.in[:])
		if err != nil {
			return 0, nil, err
		}
		if !cmd.IsDB() {
			return 0, nil, fmt.Errorf("%w: %v cell on a DB stream", c.violation, cmd)
		}
		mcmd, msg, err := c.Asm.Feed(cmd, c.in[:n])
		if err != nil {
			return 0, nil, fmt.Errorf("%w: %v", c.violation, err)
		}
		if msg != nil {
			return mcmd, msg, nil
		}
	}
}

// RecvMessage is Recv, parsed; its byte slices are valid until the next
// Recv. A message that does not parse is the peer's violation.
func (c *DBConn) RecvMessage() (DBMessage, error) {
	cmd, msg, err := c.Recv()
	if err != nil {
		return nil, err
	}
	m, err := ParseDB(cmd, msg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", c.violation, err)
	}
	return m, nil
}
