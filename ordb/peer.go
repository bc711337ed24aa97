package ordb

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"veil/chunkstore"
	"veil/circuits"
	"veil/proto"
)

// MinORDBs is how many ORDBs a peer keeps circuits to (the Peersm
// specification's "at least 6").
const MinORDBs = 6

// PeerConfig sets up a Peer.
type PeerConfig struct {
	// Store holds what the user chose to seed: what it published, or
	// fetched and decided to share. A peer answers from it only for the
	// names it advertised, and only on the circuit it advertised them on.
	Store *chunkstore.Store
	// Circuits gives the peer's circuits to ORDBs (a node's pool).
	Circuits CircuitSource
	// Facilitator sets DB_INFO's F flag.
	Facilitator bool
	// MaxChunks bounds the chunks served per query (0: DefaultMaxChunks).
	MaxChunks int
	// OpenTimeout bounds opening the stream that carries DB_INFO (0: 20 s).
	OpenTimeout time.Duration
}

// PeerStats counts what a Peer answered.
type PeerStats struct {
	Queries  int64 // queries that reached it on its circuits
	Served   int64 // of them answered from the store (data or descriptor)
	Refused  int64 // for names not advertised on that circuit: DB_END UNAVAILABLE
	Chunks   int64 // chunks served
	Adverts  int64 // DB_INFO messages sent
	Circuits int   // circuits an advertisement went out on (last Advertise)
}

// Peer is the peer side of the ORDB exchange: it advertises what it holds
// to the ORDBs at the end of its own circuits (DB_INFO [hash_name, P, F]
// at 25, 50, 75 and 100 %) and answers the queries those ORDBs send back
// along the same circuits (Serve, registered as the switch's PeerDest
// service). On the last hop of its own circuits a node answers only for
// names it advertised there: a query on any other circuit, or for any
// other name, gets DB_END UNAVAILABLE, so an ORDB cannot probe what else
// the peer holds, and a stranger building a circuit to the node learns
// nothing. Safe for concurrent use.
type Peer struct {
	cfg PeerConfig
	srv Server

	mu    sync.Mutex // guards circs
	circs map[uint64]*peerCirc

	queries, served, refused, chunks, adverts atomic.Int64
	lastCircs                                 atomic.Int64
}

// peerCirc is one of the peer's circuits to an ORDB: the stream its
// DB_INFOs go out on and what it advertised there (P per name).
type peerCirc struct {
	c    OriginCircuit
	s    *circuits.Stream
	mc   *msgConn
	wmu  sync.Mutex // serialises sends on s
	adv  map[proto.HashName]uint8
	dead bool
}

// NewPeer returns a Peer; register Serve as the switch's PeerDest service.
func NewPeer(cfg PeerConfig) (*Peer, error) {
	if cfg.Store == nil || cfg.Circuits == nil {
		return nil, errors.New("ordb: a peer needs a store and circuits")
	}
	if cfg.OpenTimeout <= 0 {
		cfg.OpenTimeout = 20 * time.Second
	}
	return &Peer{cfg: cfg, srv: Server{Store: cfg.Store, MaxChunks: cfg.MaxChunks}, circs: make(map[uint64]*peerCirc)}, nil
}

// Stats returns the counters.
func (p *Peer) Stats() PeerStats {
	return PeerStats{Queries: p.queries.Load(), Served: p.served.Load(), Refused: p.refused.Load(),
		Chunks: p.chunks.Load(), Adverts: p.adverts.Load(), Circuits: int(p.lastCircs.Load())}
}

// ErrTooFewORDBs is returned by Advertise when the peer's circuits reach
// fewer than MinORDBs distinct ORDBs (it advertised on those it has).
var ErrTooFewORDBs = errors.New("ordb: circuits to fewer than 6 ORDBs")

// Advertise tells the ORDB of every circuit how much of name the store
// holds, if it is 25 % or more and more than that circuit was told
// before. It returns the number of circuits told.
func (p *Peer) Advertise(ctx context.Context, name proto.HashName) (int, error) {
	pv, _, err := p.cfg.Store.Progress(name)
	if err != nil {
		return 0, err
	}
	if pv < 0 {
		return 0, nil // below 25 %: not a source yet
	}
	P := uint8(pv)
	circs := p.cfg.Circuits.FindCircuits()
	lastHops := map[proto.NodeID]bool{}
	told := 0
	var firstErr error
	for _, c := range circs {
		if path := c.Path(); len(path) > 0 {
			lastHops[path[len(path)-1].ID] = true
		}
		pc, err := p.circuit(ctx, c)
		if err != nil {
			firstErr = cmp(firstErr, err)
			continue
		}
		// Record first: a query racing the DB_INFO is answered.
		p.mu.Lock()
		old, had := pc.adv[name]
		if had && old >= P {
			p.mu.Unlock()
			continue
		}
		pc.adv[name] = P
		p.mu.Unlock()
		pc.wmu.Lock()
		err = pc.mc.send(proto.DBInfo{HashName: name, P: P, Facilitator: p.cfg.Facilitator})
		pc.wmu.Unlock()
		if err != nil {
			firstErr = cmp(firstErr, err)
			continue
		}
		p.adverts.Add(1)
		told++
	}
	p.lastCircs.Store(int64(told))
	if firstErr == nil && len(lastHops) < MinORDBs {
		firstErr = fmt.Errorf("%w: %d", ErrTooFewORDBs, len(lastHops))
	}
	return told, firstErr
}

// AdvertiseStream tells the ORDB of every circuit which chunks of the
// live stream name the store holds (DB_STREAM_INFO, for OR_streams_P).
// A live holder drops old chunks and does not say so (the Peersm
// specification's lists are not updated for removed chunks); call it
// again as chunks come. It returns the number of circuits told.
func (p *Peer) AdvertiseStream(ctx context.Context, name proto.HashName) (int, error) {
	d, err := p.cfg.Store.Descriptor(name)
	if err != nil {
		return 0, err
	}
	if d.Flags&proto.FlagLive == 0 {
		return 0, fmt.Errorf("ordb: %v is not a live stream", name)
	}
	have, err := p.cfg.Store.Have(name)
	if err != nil {
		return 0, err
	}
	first, last, ok := bitRange(have)
	if !ok {
		return 0, nil
	}
	m := proto.DBStreamInfo{HashName: name, First: first, Last: last, Type: d.Type}
	told := 0
	var firstErr error
	for _, c := range p.cfg.Circuits.FindCircuits() {
		pc, err := p.circuit(ctx, c)
		if err != nil {
			firstErr = cmp(firstErr, err)
			continue
		}
		p.mu.Lock()
		pc.adv[name] = proto.MaxP
		p.mu.Unlock()
		pc.wmu.Lock()
		err = pc.mc.send(m)
		pc.wmu.Unlock()
		if err != nil {
			firstErr = cmp(firstErr, err)
			continue
		}
		p.adverts.Add(1)
		told++
	}
	return told, firstErr
}

// bitRange returns the lowest and highest set bit of a have-bitmap.
func bitRange(have []uint64) (lo, hi uint64, ok bool) {
	for w, word := range have {
		if word == 0 {
			continue
		}
		b := uint64(bits.TrailingZeros64(word))
		if !ok {
			lo, ok = uint64(w)*64+b, true
		}
		hi = uint64(w)*64 + 63 - uint64(bits.LeadingZeros64(word))
	}
	return lo, hi, ok
}

func cmp(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// circuit returns the peer's state for c, opening its DB_INFO stream the
// first time.
func (p *Peer) circuit(ctx context.Context, c *circuits.Circuit) (*peerCirc, error) {
	p.mu.Lock()
	pc := p.circs[c.ID()]
	if pc != nil && !pc.dead {
		p.mu.Unlock()
		return pc, nil
	}
	p.mu.Unlock()
	octx, cancel := context.WithTimeout(ctx, p.cfg.OpenTimeout)
	s, err := c.OpenStream(octx, ORDBDest)
	cancel()
	if err != nil {
		return nil, err
	}
	pc = &peerCirc{c: c, s: s, mc: newMsgConn(s), adv: map[proto.HashName]uint8{}}
	p.mu.Lock()
	if old := p.circs[c.ID()]; old != nil && !old.dead {
		p.mu.Unlock()
		s.Close()
		return old, nil
	}
	p.circs[c.ID()] = pc
	p.mu.Unlock()
	// Drain the stream (an ORDB may tell the peer what it knows; nothing
	// of it is needed here) and forget the circuit once it ends.
	go func() {
		buf := make([]byte, proto.RelayDataSize)
		for {
			if _, _, err := s.ReadCell(buf); err != nil {
				break
			}
		}
		s.Close()
		p.mu.Lock()
		pc.dead = true
		if p.circs[c.ID()] == pc {
			delete(p.circs, c.ID())
		}
		p.mu.Unlock()
	}()
	return pc, nil
}

// advertised reports whether name was advertised on the origin circuit
// with local handle circ.
func (p *Peer) advertised(circ uint64, name proto.HashName) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc := p.circs[circ]
	if pc == nil {
		return false
	}
	_, ok := pc.adv[name]
	return ok
}

// Serve answers the queries an ORDB sends back along one of the peer's
// circuits, until the stream ends; it closes s. Register it as the
// switch's PeerDest service.
func (p *Peer) Serve(s *circuits.Stream) {
	circ := uint64(0)
	if a, ok := s.LocalAddr().(circuits.StreamAddr); ok {
		circ = a.Circuit
	}
	_ = p.serve(s, circ)
}

func (p *Peer) serve(s CellStream, circ uint64) error {
	defer s.Close()
	c := newMsgConn(s)
	c.Asm.Max = proto.DBFirstFrameData
	var bufs serveBufs
	for {
		cmd, msg, err := c.recv()
		if err != nil {
			if errors.Is(err, ErrProtocol) {
				return err
			}
			return nil
		}
		if cmd == proto.RelayDBEnd {
			return nil
		}
		if cmd != proto.RelayDBQuery {
			return fmt.Errorf("%w: %v where DB_QUERY was expected", ErrProtocol, cmd)
		}
		q, err := proto.ParseDBQuery(msg)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		p.queries.Add(1)
		if !p.advertised(circ, q.HashName) {
			p.refused.Add(1)
			if err := c.send(proto.DBEnd{Reason: proto.DBEndUnavailable}); err != nil {
				return err
			}
			continue
		}
		p.served.Add(1)
		if !q.WantsDescriptor() {
			p.chunks.Add(int64(min(int(q.NbChunks), p.maxChunks())))
		}
		if err := p.srv.answer(c, &bufs, q); err != nil {
			return err
		}
	}
}

func (p *Peer) maxChunks() int {
	if p.cfg.MaxChunks > 0 {
		return p.cfg.MaxChunks
	}
	return DefaultMaxChunks
}
