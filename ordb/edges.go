package ordb

import (
	"context"

	"veil/circuits"
	"veil/kademlia"
	"veil/proto"
)

// Stream destinations. ORDBDest is the ORDB service at the last hop of
// peers' circuits (and of ORDB-to-ORDB circuits). PeerDest is the peer
// service at the origin of a peer's own circuit: an ORDB opens a stream
// back to it to ask for content the peer advertised on that circuit.
const (
	ORDBDest = "ordb"
	PeerDest = "ordb-peer"
)

// InStream is a stream that reached the ORDB service: a CellStream on
// whose circuit the ORDB can also open streams back towards the other
// end (the peer, or the ORDB that built the circuit).
type InStream interface {
	CellStream
	// OpenBack opens a new stream on the same circuit to the service
	// dest at the other end.
	OpenBack(ctx context.Context, dest string) (CellStream, error)
}

// circuitStream adapts a *circuits.Stream to InStream.
type circuitStream struct{ *circuits.Stream }

func (s circuitStream) OpenBack(ctx context.Context, dest string) (CellStream, error) {
	return s.Stream.OpenStream(ctx, dest)
}

// FromCircuitStream makes a circuit stream an InStream, for registering
// Relay.Serve as the switch's ORDBDest service.
func FromCircuitStream(s *circuits.Stream) InStream { return circuitStream{s} }

// ORDBCircuit is a circuit this node built to another ORDB (after a DHT
// lookup named it as a provider).
type ORDBCircuit interface {
	// OpenStream opens a stream to the ORDB service at the last hop.
	OpenStream(ctx context.Context) (CellStream, error)
	// Done is closed when the circuit is gone.
	Done() <-chan struct{}
	Close() error
}

// CircuitBuilder builds circuits to other ORDBs. A real node resolves
// the record's ORDB to its descriptor and builds a path ending there.
type CircuitBuilder interface {
	BuildTo(ctx context.Context, provider proto.ProviderRecord) (ORDBCircuit, error)
}

// DHT is what an ORDB needs of the DHT; *kademlia.Node satisfies it.
type DHT interface {
	FindValue(ctx context.Context, key proto.HashName) (kademlia.Result, error)
	Provide(ctx context.Context, key proto.HashName, pieces uint8, facilitator bool) (kademlia.Result, error)
}

var _ DHT = (*kademlia.Node)(nil)

// Facilitators hands a query to the facilitator service (BitTorrent):
// FacilitatorFinder finds facilitators and reaches them through circuits.
// A Relay without one answers UNAVAILABLE where the Core would ask
// facilitators.
type Facilitators interface {
	// Ask starts fetching q.HashName (an infohash) and returns the stream
	// its answers will come on, or an error.
	Ask(ctx context.Context, q proto.DBQuery) (CellStream, error)
}

// OriginCircuit is an origin circuit (*circuits.Circuit): the peer side
// sends DB_INFO over it and recognises streams opened back on it by ID.
type OriginCircuit interface {
	ID() uint64
	OpenStream(ctx context.Context, dest string) (*circuits.Stream, error)
	Done() <-chan struct{}
}

var _ OriginCircuit = (*circuits.Circuit)(nil)

// CircuitSource gives the peer its circuits to ORDBs; *circuits.Pool
// satisfies it.
type CircuitSource interface {
	FindCircuits() []*circuits.Circuit
}

var _ CircuitSource = (*circuits.Pool)(nil)
