// Package proto is the only place where bytes become values: link cells,
// relay cells, the onion circuit bodies (CREATE2 ... END), the DB_*
// messages of the Peersm specification, Merkle proofs, node descriptors
// and DHT RPCs. It imports nothing else of veil's.
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
// bytes are a MerkleProof (drawn below) against the descriptor's root:
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
// DB_ANNOUNCE (DBAnnounce, veil): an ORDB to a neighbour ORDB, the
// Peersm specification's ['abcd', size, type]; flags bit 0 = live stream:
//
//	+----+-----------+----------+------------+----------+------+-------+
//	| 20 | hash_name | size len | size       | type len | type | flags |
//	| 1  | 20        | 1, <= 8  | 0..8, min. | 1        | ..   | 1     |
//	+----+-----------+----------+------------+----------+------+-------+
//
// DB_STREAM_INFO (DBStreamInfo, veil): a peer holds chunks first..last
// (inclusive, first <= last) of a live stream:
//
//	+----+-----------+-------+------+----------+------+
//	| 20 | hash_name | first | last | type len | type |
//	| 1  | 20        | 8     | 8    | 1        | ..   |
//	+----+-----------+-------+------+----------+------+
//
// DB_LIVE_START (DBLiveStart, veil): sent just before the DB_CONNECTED of
// a live stream, the chunk its requester should start from:
//
//	+-------+
//	| chunk |
//	| 8     |
//	+-------+
//
// # Merkle proofs
//
// The proof bytes of a DB_PROOF (MerkleProof). The hashes are the sibling
// subtrees, left to right, that rebuild the root from the covered chunks;
// a live stream's proof first carries the signed head (LiveHead) it leads
// to. At most MaxProofHashes (60) hashes, so a proof fits MaxProofSize:
//
//	static:
//	+------+---------+--------------------------- ... ---+
//	| kind | n       | hashes                            |
//	| 1, 0 | 1, <=60 | n x 32                            |
//	+------+---------+--------------------------- ... ---+
//	live:
//	+------+--------------------------------+---------+-------- ... ---+
//	| kind | head                           | n       | hashes         |
//	| 1, 1 | 108                            | 1, <=60 | n x 32         |
//	+------+--------------------------------+---------+-------- ... ---+
//	head (LiveHead), signed by the content's key:
//	+----------------+---------------+------+-------------------+
//	| length, chunks | timestamp (s) | root | Ed25519 signature |
//	| 8              | 4             | 32   | 64                |
//	+----------------+---------------+------+-------------------+
//
// # Onion bodies
//
// The circuit-level bodies of Tor's link protocol, as veil uses them.
// CREATE2 and CREATED2 fill a fixed cell: the bytes after the body must be
// zero. The relay-cell bodies are exactly the relay cell's Length bytes.
//
// CREATE2 cell payload (Create2), also the tail of an EXTEND2:
//
//	+-------+------+--------------------------- ... ---+---------- ... ---+
//	| HTYPE | HLEN | HDATA                             | zero padding     |
//	| 2     | 2    | HLEN (<= 505; <= 455 in EXTEND2)  | to 509           |
//	+-------+------+--------------------------- ... ---+---------- ... ---+
//
// CREATED2 cell payload and EXTENDED2 relay data (Created2):
//
//	+------+--------------------------- ... ---+---------- ... ---+
//	| HLEN | HDATA                             | zero padding     |
//	| 2    | HLEN (<= 507)                     | (CREATED2 only)  |
//	+------+--------------------------- ... ---+---------- ... ---+
//
// ntor HDATA (HTYPE 2): the client's (NtorRequest) names the node and the
// onion key it expects, the server's (NtorReply) proves it holds that key:
//
//	client (NtorRequest):                   server (NtorReply):
//	+---------+-------------+-------------+   +-------------+------+
//	| node ID | onion key B | ephemeral X |   | ephemeral Y | AUTH |
//	| 20      | 32          | 32          |   | 32          | 32   |
//	+---------+-------------+-------------+   +-------------+------+
//
// EXTEND2 relay data (Extend2), sent in RELAY_EARLY:
//
//	+---------+--------+----------+------+-------+------+-------- ... ---+
//	| next ID | IP len | IP       | port | HTYPE | HLEN | HDATA          |
//	| 20      | 1      | 4 or 16  | 2    | 2     | 2    | HLEN           |
//	+---------+--------+----------+------+-------+------+-------- ... ---+
//
// SENDME relay data (Sendme): nothing at all for version 0 (stream level);
// at circuit level version 1 with the 16-byte GMAC tag of the cell that
// triggered it:
//
//	+---------+----------+------------------- ... ---+
//	| version | data len | data                      |
//	| 1       | 2        | data len (<= 495)         |
//	+---------+----------+------------------- ... ---+
//
// BEGIN relay data (Begin): the service ("echo", "ordb") or host:port the
// last hop hands the stream to. END and TRUNCATED relay data (End): the
// reason.
//
//	+----------+--------------------+       +--------+
//	| dest len | destination        |       | reason |
//	| 1, >= 1  | dest len           |       | 1      |
//	+----------+--------------------+       +--------+
//
// # DHT RPCs
//
// A DHT var cell (CmdDHT) carries exactly one DHT RPC (DHTMessage). Every
// RPC starts with its type and a transaction ID the answer repeats;
// requests (odd types) then give where their sender accepts links (IP
// length 0 and no port when it accepts none); answers have no address:
//
//	request:
//	+------+-------+--------+----------+------+------------ ... ---+
//	| type | TxID  | IP len | IP       | port | body by type       |
//	| 1    | 8     | 1      | 0, 4, 16 | 0, 2 |                    |
//	+------+-------+--------+----------+------+------------ ... ---+
//	answer:
//	+------+-------+------------------------------------ ... ---+
//	| type | TxID  | body by type                                |
//	| 1    | 8     |                                             |
//	+------+-------+------------------------------------ ... ---+
//
// Types 1..10 are Kademlia's (PING ... FOUND_PEER, bodies drawn on
// DHTMessage). 11 and 12 let the two ends of a link learn each other's
// signed node descriptor, which building circuits through a node needs:
//
//	DESCRIPTOR_REQUEST (11): no body
//	+------+-------+--------+----------+------+
//	| 11   | TxID  | IP len | IP       | port |
//	| 1    | 8     | 1      | 0, 4, 16 | 0, 2 |
//	+------+-------+--------+----------+------+
//	DESCRIPTOR (12): the answerer's own descriptor, to the end
//	+------+-------+------------------------------------ ... ---+
//	| 12   | TxID  | node descriptor (NodeDescriptor)            |
//	| 1    | 8     | 167 .. 307 (no address .. four IPv6 ones    |
//	|      |       | and 16 exit port ranges)                    |
//	+------+-------+------------------------------------ ... ---+
//
// The node descriptor's own layout is drawn on NodeDescriptor.
package proto
