package ordb

import (
	"errors"

	"veil/proto"
)

// CellStream is the part of a circuit stream the DB_* exchange needs:
// whole cells with their relay command. *circuits.Stream satisfies it.
type CellStream = proto.CellStream

// Errors of the DB_* exchange.
var (
	ErrUnavailable = errors.New("ordb: content unavailable")
	ErrProtocol    = errors.New("ordb: protocol violation by peer")
	ErrMismatch    = errors.New("ordb: descriptor does not hash to the requested hash_name")
)

// msgConn sends and receives whole DB_* messages on a CellStream; a peer
// that breaks the exchange gets ErrProtocol. Not safe for concurrent use
// of the same direction.
type msgConn struct{ proto.DBConn }

func newMsgConn(s CellStream) *msgConn { return &msgConn{proto.NewDBConn(s, ErrProtocol)} }

// send frames m over as many cells as it takes.
func (c *msgConn) send(m proto.DBMessage) error { return c.Send(m) }

// recv returns the next whole message, valid until the next recv.
func (c *msgConn) recv() (proto.RelayCommand, []byte, error) { return c.Recv() }
