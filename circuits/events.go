package circuits

import (
	"fmt"
	"sync/atomic"
	"time"

	"veil/proto"
)

// EventKind says what happened to a circuit.
type EventKind uint8

// Circuit events, in the order a circuit's life produces them.
const (
	// EventLaunched: we started building an origin circuit.
	EventLaunched EventKind = iota + 1
	// EventExtended: one more hop of an origin circuit is up (Hops says how many).
	EventExtended
	// EventBuilt: an origin circuit reached its full length.
	EventBuilt
	// EventFailed: building an origin circuit failed (Err says why).
	EventFailed
	// EventClosed: a built origin circuit, or a circuit we carried for
	// others, is gone (Reason says why).
	EventClosed
	// EventJoined: we accepted a CREATE2 and carry a circuit for someone.
	EventJoined
)

// String is the kind's name in lower case ("built", "closed", ...).
func (k EventKind) String() string {
	switch k {
	case EventLaunched:
		return "launched"
	case EventExtended:
		return "extended"
	case EventBuilt:
		return "built"
	case EventFailed:
		return "failed"
	case EventClosed:
		return "closed"
	case EventJoined:
		return "joined"
	}
	return fmt.Sprintf("event(%d)", uint8(k))
}

// Event reports a step of a circuit's life, for the control port, the
// dashboard and metrics. Handlers get it synchronously and must not block.
type Event struct {
	Kind    EventKind           // what happened
	Circuit uint64              // local handle, unique per Switch; never on the wire
	Origin  bool                // an origin circuit (ours) rather than one we carry
	Path    []proto.NodeID      // origin circuits: the hops so far; do not modify
	Hops    int                 // hops built so far
	Reason  proto.DestroyReason // EventClosed: why the circuit ended
	Err     error               // EventFailed: why the build failed
	Stats   CircuitStats        // EventClosed: what the circuit carried here
	At      time.Time           // when, on SwitchConfig.Now
}

// CircuitStats counts what crossed a circuit at this node, in relay-cell
// payload bytes (data only) and cells (all relay cells).
type CircuitStats struct {
	CellsSent, CellsRecv uint64 // relay cells sent and received
	BytesSent, BytesRecv uint64 // relay data bytes of the counted cells
}

// counters are a circuit's live statistics; updated atomically from the
// goroutines that move its cells. They read no clock (a clock read per cell
// cost ~3% of a bulk transfer): the pool infers activity from the counts.
type counters struct {
	cellsSent, cellsRecv atomic.Uint64
	bytesSent, bytesRecv atomic.Uint64
}

func (c *counters) sent(n int) {
	c.cellsSent.Add(1)
	c.bytesSent.Add(uint64(n))
}

func (c *counters) recv(n int) {
	c.cellsRecv.Add(1)
	c.bytesRecv.Add(uint64(n))
}

func (c *counters) snapshot() CircuitStats {
	return CircuitStats{
		CellsSent: c.cellsSent.Load(), CellsRecv: c.cellsRecv.Load(),
		BytesSent: c.bytesSent.Load(), BytesRecv: c.bytesRecv.Load(),
	}
}
