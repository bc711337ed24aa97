package facilitator

import (
	"errors"

	"veil/proto"
)

// Stream is a circuit stream carrying DB_* messages: whole relay cells with
// their command. *circuits.Stream satisfies it (and so does any
// ordb.CellStream).
type Stream = proto.CellStream

// ServiceDest is the stream destination at which a facilitator node serves
// DB_QUERY for torrents: the last hop of the circuits ORDBs build to it.
const ServiceDest = "facilitator"

// ErrProtocol reports a peer that broke the DB_* exchange.
var ErrProtocol = errors.New("facilitator: protocol violation")

// msgConn sends and receives whole DB_* messages on a Stream; a peer that
// breaks the exchange gets ErrProtocol. Not safe for concurrent use of one
// direction.
type msgConn struct{ proto.DBConn }

func newMsgConn(s Stream) *msgConn { return &msgConn{proto.NewDBConn(s, ErrProtocol)} }

func (c *msgConn) send(m proto.DBMessage) error { return c.Send(m) }

// recv returns the next whole message, parsed; its byte slices are valid
// until the next recv.
func (c *msgConn) recv() (proto.DBMessage, error) { return c.RecvMessage() }
