// Package circuits carries veil's cells between nodes over onion circuits.
// It holds, one concern per file:
//
//   - identity.go: the node's identity (the Ed25519 identity key, the node
//     ID derived from it, the rotating X25519 onion key, the signed
//     descriptor).
//   - switch.go: the Switch, which takes every cell the node's links
//     receive, answers CREATE2, hands each cell to its circuit, reaps idle
//     circuits and allocates circuit IDs.
//   - relayed.go: circuits others build through this node (relayCore and
//     its shell relayCirc).
//   - circuit.go: origin circuits, the ones we build (originCore and its
//     shell Circuit, with Build, Extend and Truncate).
//   - stream.go: Streams multiplexed on a circuit at either end, and the
//     SENDME windows.
//   - exit.go: BEGIN to an "ip:port" at an exit node.
//   - pool.go: the Pool that keeps MinCircuits..MaxCircuits origin
//     circuits built and fresh, and path selection.
//
// The links themselves (TLS 1.3 over TCP, authenticated by the identity
// keys) live in package circuits/link; this package sees them only as
// link.Conn and link.Dialer, which circuits/link/linktest implements in
// memory. The handshake, the per-hop crypto and the window counters are
// pure and live in package circuits/onion; every byte layout (cells, relay
// cells, CREATE2, EXTEND2, SENDME, BEGIN, END, ntor HDATA) is proto's.
//
// # Identity
//
// A node's ID is proto.NodeIDFromKey(identity public key). The identity key
// signs the node descriptor (proto.NodeDescriptor), which names the current
// onion key. LoadOrCreateIdentity keeps both keys in a data directory;
// NewEphemeralIdentity makes a per-run identity, as the Peersm
// specification wants (new IDs each session, so users cannot be tracked by
// them). Links need only the identity key: link.NewLinks(id.Key, cfg).
//
// # Two state machines, each with a thin goroutine
//
// A circuit's protocol is a pure state machine: it holds no goroutine,
// lock, clock or randomness of its own, takes one event at a time with the
// time, and queues actions that its caller collects with ready:
//
//	          events                                      actions
//	cell on a link, link closed,   +-----------+   send a cell, seal back, DESTROY,
//	dial done, send failed, kill ->| relayCore |-> deliver to a stream, BEGIN,
//	                               +-----------+   dial next hop, forget a route, close
//
//	cell from first hop, link      +------------+  send CREATE2, seal a control cell,
//	closed, send failed, kill,   ->| originCore |->add or cut hops, deliver, BEGIN,
//	Extend, Truncate requests      +------------+  answer a request, close
//
// Each circuit has one goroutine at a time, its shell, that takes what
// arrives for the circuit, feeds it to the core, and executes the actions
// on the links, the switch's registry and the stream endpoint. An action
// that fails (a send on a closing link) becomes the next event. Nothing but
// that goroutine touches the core. An origin circuit's (Circuit.run) lives
// as long as the circuit and selects on its cell queue, kill channel, owner
// requests and the switch's stop. A circuit we carry has one only while
// inputs are queued for it (relayQueue: cells, dial results, a kill): the
// first input to its empty queue starts relayCirc.run, which exits when the
// queue is empty again, so an idle relayed circuit holds no goroutine, and
// no queue buffer either (the buffers grow with the cells queued, and the
// idle reaper drops those of a circuit gone quiet).
// The dial an EXTEND2 asks for runs in a goroutine of its own and comes
// back as an event, so a relay keeps handling the circuit's cells
// (DESTROY, TRUNCATE, streams) while it dials; a generation number makes a
// dial the core no longer wants leave no route behind. Table tests drive
// both cores event by event (relayed_test.go, circuit_core_test.go).
//
// Where time and randomness enter: SwitchConfig.Now is the circuits'
// clock. A shell reads it once per wake-up and passes it to the core with every
// event of that batch (the EXTEND2 dial deadline is now+ExtendTimeout);
// Switch.expireIdle and Pool.Check take now as an argument, and their
// tickers (reapIdle, Pool.Run) only decide when to call them. Stream
// deadlines are judged on SwitchConfig.Now; their timers only wake the
// waiters. SwitchConfig.Rand feeds the handshakes and seeds the circuit-ID
// generator; PoolConfig.Rand draws the paths.
//
// # Roles
//
// An origin circuit holds one onion.Hop per hop and seals each relay cell
// for the hop it is for. A circuit we carry holds one Hop: forward cells
// lose our layer and are either ours (Recognized and the GMAC match) or
// passed to the next hop; backward cells gain our layer. With no next hop
// we are the last hop: BEGIN opens a stream to the Service registered
// under its name (or, at an exit, a TCP connection to HOST:PORT, the name
// resolved there and every address checked by its ExitPolicy; exit.go).
// ExitDialer is the other side: it maps SOCKS isolation keys to circuits
// ending at exits and tries another exit when one refuses.
// EXTEND2 must come in RELAY_EARLY, of which a circuit may carry
// MaxRelayEarly (8); TRUNCATE cuts the circuit after us and is answered by
// TRUNCATED. A DESTROY from the origin's side goes on to the next hop with
// its reason; losing the next hop (DESTROY or link closed) sends TRUNCATED
// with the reason back to the origin, which destroys the circuit if it did
// not ask for it. A cell no hop recognises at the end of the path (one bit
// flipped on the way suffices) destroys the circuit with PROTOCOL.
//
// Circuit IDs: as in Tor, the side that dialed a link picks IDs with the
// top bit set and the other side IDs with it clear. Stream IDs: the origin
// numbers its streams 1..0x7fff, the last hop 0x8000..0xffff.
//
// # Queues and flow control
//
// A link's read goroutine never waits on another link: Switch.HandleCell
// looks the circuit up by (link, circuit ID) and hands the cell to that
// circuit's queue (at most QueueCells, counting for a relayed circuit the
// batch its goroutine is working through); only the circuit's goroutine
// may block sending on a link. Since no reader ever blocks, a full link queue always
// drains, so links cannot deadlock in a cycle. The windows bound what a
// well-behaved peer can have queued for a circuit (both circuit windows
// plus control cells), so a queue that overflows means the peer ignored
// them: DESTROY RESOURCELIMIT.
//
// At the circuit's ends, each data-bearing cell (DATA, DB_*) counts against
// the circuit window (a SENDME, authenticated with the 16-byte GMAC tag of
// the cell that triggered it, every CircIncrement cells, sent on arrival as
// in Tor) and against its stream's window (a SENDME every StreamIncrement
// cells the reader has consumed). A stream whose reader is slow holds at
// most StreamWindow cells at the receiver; its writer blocks.
//
// # Cell ownership
//
// Cells are *proto.Cell from proto's pool (GetCell, PutCell); whoever owns
// one either passes it on or puts it back, and per-hop crypto runs on it in
// place. The link's reader hands HandleCell a cell it then owns: it drops
// it or queues it for a circuit. The circuit's goroutine gives it to the
// core, which owns it next: it puts it back, or hands it out in exactly one
// action (a send, whose link takes it; a backward cell the shell seals and
// sends; a delivery, after which a stream's receive queue holds it until a
// reader copies it out and puts it back, or the shell puts it back at once
// if no open stream takes it). Bytes an action carries beyond
// its cell (EXTEND2's handshake, EXTENDED2's reply) are copied before the
// cell goes back to the pool.
package circuits
