// Package ordb is the ORDB function of the Peersm specification: the last
// hop of peers' circuits, which answers DB_QUERY with the descriptor
// (DB_CONNECTED) or with proved chunks (DB_PROOF then DB_DATA), and the
// requester's side of that exchange.
//
// What is here today: Server answers from its own chunkstore, and Fetch
// pulls a whole content over one stream, pipelining queries and verifying
// every range before it is stored. The Peersm specification's list
// handling (OR_files_P, OR_streams_P rotation, relaying to other peers with
// the 0-5 counter, DB_INFO, FIND_VALUE then facilitators) is planned, and
// so is the five-circuit window (package window); docs/PROTOCOL.md
// describes both.
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
