// Package link is veil's network edge: links, each one TCP connection
// carrying TLS 1.3 between two nodes authenticated by their Ed25519
// identity keys, and Links, a node's set of them (listening, dialing on
// demand, at most one in use per peer). Above it, the circuit layer sees a
// link only as a Conn (the peer's ID and a way to send it cells) and gets
// links from a Dialer; package linktest implements both in memory.
//
// # Authentication
//
// Each side presents a self-signed X.509 certificate for its Ed25519
// identity key; both sides skip the usual chain checks and instead take the
// peer's identity key from its certificate (TLS 1.3's CertificateVerify
// proves the peer holds it). A node's ID is proto.NodeIDFromKey of that
// key. A dialer knows the ID it wants and refuses a peer whose key hashes
// to anything else (PeerIDError). This replaces Tor's CERTS/AUTH cells.
// Session tickets are off: every link authenticates afresh.
//
// # Framing
//
// Inside TLS, cells follow each other with no further framing; the command
// byte says which kind comes next:
//
//	fixed cell, 514 bytes, Cmd < 128 (PADDING, RELAY, CREATE2, ...):
//	+--------+-----+------------------------------ ... ---+
//	| CircID | Cmd | Payload                              |
//	|   4    |  1  | 509                                  |
//	+--------+-----+------------------------------ ... ---+
//
//	variable cell, Cmd >= 128 (DHT):
//	+--------+-----+--------+------------------- ... ---+
//	| CircID | Cmd | Length | Payload                   |
//	|   4    |  1  |   2    | Length <= MaxVarPayload   |
//	+--------+-----+--------+------------------- ... ---+
//
//	a link's byte stream:
//	| fixed | fixed | var (7+Length) | PADDING | fixed | ...
//
// proto.CellReader is the one reader of this framing. An unknown command or
// a variable cell longer than proto.MaxVarPayload closes the link: nothing
// after it can be framed.
//
// # Timeouts
//
// PADDING cells are keepalives: a writer that sent nothing for
// KeepaliveInterval sends one, and the reader drops them. A link on which
// nothing arrives for IdleTimeout is closed (ErrIdleTimeout); one whose
// peer accepts no bytes for WriteTimeout too (ErrWriteTimeout). Close
// flushes for at most CloseTimeout. All of them run on the time package,
// so tests run them on testing/synctest's fake clock.
//
// # Goroutines and queues
//
// Each link has two goroutines. The writer owns the connection's write
// side: it takes every queued cell at once, copies them into a buffered
// writer (many cells per TLS record) and sends the buffer when it is full
// and after each batch it took, so cells never wait for later ones (a
// producer that keeps the queue busy would otherwise hold the first cells
// until a whole buffer filled); the TLS records of one buffer go to the
// socket in one write call. Batches grow by themselves when the writer
// falls behind. The queue is bounded in bytes (SendQueueBytes): SendCell
// blocks while it is full, which back-pressures whoever produces the cells.
// The reader owns the read side, reads many cells per read through a
// ReadBufferSize buffer and calls the handlers in order; a slow handler
// back-pressures its own link only.
//
// Cell ownership: SendCell takes the cell and returns it to the proto pool
// once written (or on error). The Cell handler receives a pooled cell and
// owns it. Var handler payloads are valid only during the call.
//
// A handler that forwards to another link with SendCell may block on that
// link's full queue; two links forwarding into each other that way can
// stall until WriteTimeout. Relays use TrySendCell (which fails with
// ErrQueueFull) where waiting is not acceptable.
//
// # Budgets
//
// Config bounds links by direction (MaxInbound, MaxOutbound, MaxLinks in
// all), inbound handshakes in progress (MaxHandshakes) and inbound links
// and handshakes from one /24 or /48 (MaxInboundPerSubnet); a connection
// beyond a bound is closed at once. Gets share a dial only when they name
// the same ID at the same address, and reuse a link only at the named IP.
//
// # Closing
//
// Link.Close is clean (flush, TLS close_notify, TCP half-close, drain until
// the peer closes, all bounded by CloseTimeout) and does not wait;
// Link.Done tells when the goroutines are gone. Errors (protocol
// violations, timeouts) cut the connection at once. Links.Close closes
// everything and waits.
package link
