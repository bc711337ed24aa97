package node

import (
	"context"
	"net"
	"net/netip"

	"veil/circuits"
	"veil/circuits/link"
	"veil/ordb"
	"veil/proto"
)

// Observer is told what a node sees, so that a test can check from the
// records of every node who learnt what (TestObservers). A node without
// one (production) skips every hook at the cost of a nil check. Calls
// come from many goroutines at once.
type Observer interface {
	// Link: a link with peer carried a cell to us; remote is the peer's
	// address as the TCP connection shows it (invalid in memory).
	Link(peer proto.NodeID, remote netip.AddrPort, inbound bool)
	// DB: a DB_QUERY or DB_INFO went through one of this node's streams,
	// received (sent false) or sent.
	DB(ev DBEvent)
	// DHT: a DHT request for key came from peer over a link.
	DHT(peer proto.NodeID, typ proto.DHTType, key proto.NodeID)
	// Path: the node built a circuit of its own through ids (the first
	// hop first) for a fetch or a publication.
	Path(ids []proto.NodeID)
}

// DBEvent is one DB_QUERY or DB_INFO a node handled.
type DBEvent struct {
	Cmd       proto.RelayCommand // RelayDBQuery or RelayDBInfo
	Name      proto.HashName
	RequestID uint64 // DB_QUERY only
	Chunk     uint64 // DB_QUERY only: first chunk
	NbChunks  uint64 // DB_QUERY only
	Sent      bool
	Dest      string // the stream's service (ordb, ordb-peer)
}

func (n *Node) observeLink(c link.Conn) {
	var remote netip.AddrPort
	if ra, ok := c.(interface{ RemoteAddr() net.Addr }); ok {
		if ap, err := netip.ParseAddrPort(ra.RemoteAddr().String()); err == nil {
			remote = ap
		}
	}
	n.obs.Link(c.Peer(), remote, c.Inbound())
}

// observeDHT records a DHT request.
func (n *Node) observeDHT(peer proto.NodeID, m proto.DHTMessage) {
	switch m.Type {
	case proto.DHTFindValue, proto.DHTFindNode:
		n.obs.DHT(peer, m.Type, m.Target)
	case proto.DHTStore:
		n.obs.DHT(peer, m.Type, proto.NodeID(m.Record.Key))
	}
}

// obsStream is a CellStream whose DB messages both ways are reported.
type obsStream struct {
	ordb.CellStream
	obs     Observer
	dest    string
	in, out proto.Assembler
}

func (n *Node) newObsStream(s ordb.CellStream, dest string) *obsStream {
	return &obsStream{CellStream: s, obs: n.obs, dest: dest}
}

func (s *obsStream) ReadCell(buf []byte) (proto.RelayCommand, int, error) {
	cmd, k, err := s.CellStream.ReadCell(buf)
	if err == nil && cmd.IsDB() {
		s.feed(&s.in, cmd, buf[:k], false)
	}
	return cmd, k, err
}

func (s *obsStream) WriteCell(cmd proto.RelayCommand, data []byte) error {
	if cmd.IsDB() {
		s.feed(&s.out, cmd, data, true)
	}
	return s.CellStream.WriteCell(cmd, data)
}

func (s *obsStream) feed(a *proto.Assembler, cmd proto.RelayCommand, data []byte, sent bool) {
	mcmd, msg, err := a.Feed(cmd, data)
	if err != nil {
		a.Reset()
		return
	}
	switch {
	case msg == nil:
	case mcmd == proto.RelayDBQuery:
		if q, err := proto.ParseDBQuery(msg); err == nil {
			s.obs.DB(DBEvent{Cmd: mcmd, Name: q.HashName, RequestID: q.RequestID, Chunk: uint64(q.Chunk), NbChunks: uint64(q.NbChunks), Sent: sent, Dest: s.dest})
		}
	case mcmd == proto.RelayDBInfo:
		if i, err := proto.ParseDBInfo(msg); err == nil {
			s.obs.DB(DBEvent{Cmd: mcmd, Name: i.HashName, Sent: sent, Dest: s.dest})
		}
	}
}

// obsInStream is an observed ordb.InStream: streams opened back on its
// circuit are observed too.
type obsInStream struct {
	*obsStream
	in ordb.InStream
}

func (s obsInStream) OpenBack(ctx context.Context, dest string) (ordb.CellStream, error) {
	b, err := s.in.OpenBack(ctx, dest)
	if err != nil {
		return nil, err
	}
	return s.obsStream.newBack(b, dest), nil
}

func (s *obsStream) newBack(b ordb.CellStream, dest string) *obsStream {
	return &obsStream{CellStream: b, obs: s.obs, dest: dest}
}

// observeIn wraps a stream that reached the ORDB service (none without
// an observer).
func (n *Node) observeIn(s ordb.InStream) ordb.InStream {
	if n.obs == nil {
		return s
	}
	return obsInStream{n.newObsStream(s, ordb.ORDBDest), s}
}

// observe wraps a circuit stream (none without an observer).
func (n *Node) observe(s *circuits.Stream) ordb.CellStream {
	if n.obs == nil {
		return s
	}
	return n.newObsStream(s, s.Dest())
}

// streamCircuit is the ID of the circuit s is on.
func streamCircuit(s *circuits.Stream) uint64 {
	if a, ok := s.LocalAddr().(circuits.StreamAddr); ok {
		return a.Circuit
	}
	return 0
}
