// Package proto is the only place where bytes become values: link cells,
// relay cells, the DB_* messages of the Peersm specification, node
// descriptors and DHT RPCs. It imports nothing else of veil's.
//
// Every message has Parse(b) (M, error), Append(b) []byte and Len(). Parsers
// check every length before slicing, refuse lengths over their limit before
// allocating, and return an error (wrapping one of the Err* sentinels) for
// truncated input, trailing bytes and unknown commands. No input panics.
//
// Link cell (fixed, 514 bytes):
//
//	+--------+-----+---------------------- ... ---+
//	| CircID | Cmd | Payload                      |
//	|   4    |  1  | 509                          |
//	+--------+-----+---------------------- ... ---+
//
// Variable-length link cell (Cmd >= 128, e.g. DHT):
//
//	| CircID 4 | Cmd 1 | Length 2 | Payload Length (<= MaxVarPayload) |
//
// Relay cell (the 509-byte payload of a RELAY or RELAY_EARLY cell):
//
//	| Cmd 1 | Recognized 2 | StreamID 2 | Digest 4 | Length 2 | Data 498 |
//
// The descriptor (DB_CONNECTED) is drawn on DBConnected.
package proto
