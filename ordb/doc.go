// Package ordb is the ORDB function of the Peersm specification: the last
// hop of peers' circuits, which answers DB_QUERY with the descriptor
// (DB_CONNECTED) or with proved chunks (DB_PROOF then DB_DATA), and the
// requester's side of that exchange.
//
// What is here: Server answers from its own chunkstore, and Fetch pulls a
// whole content over one stream, pipelining queries and verifying every
// range before it is stored. Core is the Peersm specification's ORDB
// decision logic as a pure state machine (OR_files_P, OR_streams_P
// rotation, relaying with the 0-5 counter and request IDs, DB_INFO with
// STORE and propagation, FIND_VALUE then facilitators). Relay is the
// goroutine shell that runs a Core over circuit streams (the ORDBDest
// service), with the DHT and circuit building behind small interfaces.
// Peer is the peer's side: DB_INFO to the ORDBs at the end of its own
// circuits, and answers, on those circuits only and only for the names
// advertised there, to the queries the ORDBs send back (the PeerDest
// service). Get runs the five-circuit window (package window) over a set
// of circuits, one pipelined stream each, verifying every range before it
// is stored. docs/PROTOCOL.md describes all of it.
//
// On a stream, every DB_* message is framed by proto (DBFramer/Assembler):
//
//	requester                          ORDB
//	DB_QUERY chunk 0, nb 0   ------>
//	                         <------   DB_CONNECTED (the signed descriptor)
//	DB_QUERY chunk i, nb n   ------>
//	                         <------   DB_PROOF [i, i+n) then DB_DATA i
//	...                                (or DB_END UNAVAILABLE)
package ordb
