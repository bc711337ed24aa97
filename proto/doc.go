// Package proto is the only place where bytes become values: link cells,
// relay cells, the DB_* messages of the Peersm specification, node
// descriptors and DHT RPCs. It imports nothing else of veil's.
//
// Every message has Parse(b) (M, error), Append(b) []byte and Len(). Parsers
// check every length before slicing, refuse lengths over their limit before
// allocating, and return an error (wrapping one of the Err* sentinels) for
// truncated input, trailing bytes, out-of-range values and unknown
// commands. No input panics. Parsed byte slices alias the input; the typed
// parsers of the hot path (cells, relay cells, DB_DATA) do not allocate.
// All integers are big-endian.
//
// # Link cells
//
// Fixed cell, 514 bytes (PADDING, CREATE2, CREATED2, RELAY, RELAY_EARLY,
// DESTROY):
//
//	+--------+-----+---------------------- ... ---+
//	| CircID | Cmd | Payload                      |
//	|   4    |  1  | 509                          |
//	+--------+-----+---------------------- ... ---+
//
// Variable-length cell (Cmd >= 128, e.g. DHT):
//
//	+--------+-----+--------+------------------ ... ---+
//	| CircID | Cmd | Length | Payload                  |
//	|   4    |  1  |   2    | Length (<= MaxVarPayload)|
//	+--------+-----+--------+------------------ ... ---+
//
// DESTROY's payload starts with a one-byte DestroyReason.
//
// # Relay cells
//
// The 509-byte payload of a RELAY or RELAY_EARLY cell; Length <= 498, the
// rest of Data is zero padding:
//
//	+-----+------------+----------+--------+--------+----------- ... ---+
//	| Cmd | Recognized | StreamID | Digest | Length | Data              |
//	|  1  |     2      |    2     |   4    |   2    | 498               |
//	+-----+------------+----------+--------+--------+----------- ... ---+
//
// # DB_* messages over relay cells
//
// Every DB_* message travels over one or more consecutive relay cells of
// one stream (DBFramer, AppendDBFrames, Assembler). Every cell but the last
// is full, so a message has exactly one framing; its total length is at
// most MaxDBMessage (1 MiB):
//
//	first cell, Cmd = DB_QUERY, DB_DATA, ...:
//	+--------------------+------------------------------------- ... ---+
//	| total msg length 4 | message bytes 0 .. min(total, 494)          |
//	+--------------------+------------------------------------- ... ---+
//	each following cell, Cmd = DB_MORE:
//	+--------------------------------------------------------- ... ---+
//	| next min(remaining, 498) message bytes                          |
//	+--------------------------------------------------------- ... ---+
//
// The messages themselves are byte-exact as the Peersm specification gives
// them; veil's additions (marked) come after its fields or in new commands.
//
// DB_QUERY (DBQuery): a GET. Chunk 0 with nb chunks 0 asks for the
// descriptor. An ORDB relaying a query increments the counter; at 5 it
// answers DB_END instead:
//
//	+------+-----------+-------+-----------+-----------+---------+------------+
//	| 20   | hash_name | n     | chunk nb  | nb chunks | counter | request ID |
//	| 1    | 20        | 1     | n = 0..4, | 2         | 1, 0..5 | 8 (veil)   |
//	|      |           |       | minimal   |           |         |            |
//	+------+-----------+-------+-----------+-----------+---------+------------+
//
// DB_CONNECTED (DBConnected): the descriptor, answer to a descriptor query.
// hash_name is the 160-bit hash of this whole encoding:
//
//	+---+------+---+------+----+--------+-------+---+------+---------+----+-----+
//	| n | size | t | MIME | 32 | Ed25519| flags | r | root | created | 64 | sig |
//	| 1 | n<=8 | 1 | t    | 1  | key 32 | 1     | 1 | 0|32 | 8       | 1  | 64  |
//	+---+------+---+------+----+--------+-------+---+------+---------+----+-----+
//	 Peersm ............................. | veil ............................
//
// DB_DATA (DBData): one or more consecutive 498-byte chunks from chunk nb
// (only the content's last chunk may be shorter). The Peersm 8-byte
// signature is a timestamp and a 4-byte tag:
//
//	+----------+---------------+-----+------------------------ ... ---+
//	| chunk nb | timestamp (s) | tag | data: k x 498 (last may be   |
//	| 4        | 4             | 4   | shorter), 1 .. MaxDBMessage-12|
//	+----------+---------------+-----+------------------------ ... ---+
//
// DB_PROOF (DBProof, veil): precedes the DB_DATA it covers; the proof
// bytes are chunkstore's (a Merkle proof against the descriptor's root):
//
//	+----------+-----------+--------------+---------------------- ... ---+
//	| chunk nb | nb chunks | proof length | proof                        |
//	| 4        | 4, >= 1   | 2, <= 2048   | proof length (MaxProofSize)  |
//	+----------+-----------+--------------+---------------------- ... ---+
//
// DB_INFO (DBInfo): P = 0..3 for 25/50/75/100% held; the F byte is present,
// as 1, only for facilitators:
//
//	+----+-----------+---+-------------+
//	| 20 | hash_name | P | F           |
//	| 1  | 20        | 1 | 0 or 1 byte |
//	+----+-----------+---+-------------+
//
// DB_FIND_PEER (DBFindPeer) is one DBPeer record; DB_FOUND_PEER
// (DBFoundPeer) is 1..16 records back to back. IP and port are both present
// or both absent; the Peersm RSA modulus slot carries the X25519 onion key:
//
//	+----+----+--------+----------+-------+------+----+-----------+
//	| 20 | ID | ip len | IP       | 0 | 2 | port | 32 | onion key |
//	| 1  | 20 | 1      | 0, 4, 16 | 1     | 0, 2 | 1  | 32        |
//	+----+----+--------+----------+-------+------+----+-----------+
//
// DB_END (DBEnd): one byte, 0 UNAVAILABLE, 1 FINISHED (aborted by the
// requester), 2 DESTROYED (by the server):
//
//	+--------+
//	| reason |
//	| 1      |
//	+--------+
//
// Node descriptors and DHT RPCs are drawn on their types (NodeDescriptor,
// DHTMessage).
package proto
