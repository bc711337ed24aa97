// Package circuits carries veil's cells between nodes: node identity (the
// Ed25519 identity key, the node ID derived from it and the rotating X25519
// onion key), links (TLS 1.3 over TCP, mutually authenticated by the
// identity keys), and the onion circuits built over those links: the Switch
// (CREATE2, relaying, EXTEND2, DESTROY; see its doc comment), origin
// Circuits with their Streams and SENDME flow control, and the Pool that
// keeps MinCircuits..MaxCircuits built. The handshake, per-hop crypto and
// window counters are pure and live in package onion.
//
// # Identity
//
// A node's ID is proto.NodeIDFromKey(identity public key). The identity key
// signs the node descriptor (proto.NodeDescriptor), which names the current
// onion key. LoadOrCreateIdentity keeps both keys in a data directory;
// NewEphemeralIdentity makes a per-run identity, as the Peersm seed wants
// (new IDs each session, so users cannot be tracked by them).
//
// # Links
//
// A link is one TCP connection carrying TLS 1.3. Each side presents a
// self-signed X.509 certificate for its Ed25519 identity key; both sides
// skip the usual chain checks and instead take the peer's identity key from
// its certificate (TLS 1.3's CertificateVerify proves the peer holds it).
// A dialer knows the ID it wants and refuses a peer whose key hashes to
// anything else. This replaces Tor's CERTS/AUTH cells.
//
// On the link, cells follow each other with no further framing:
//
//	fixed cell:    | CircID 4 | Cmd 1 (< 128) | Payload 509 |
//	variable cell: | CircID 4 | Cmd 1 (>= 128) | Length 2 | Payload Length |
//
// An unknown command or a variable cell longer than proto.MaxVarPayload
// closes the link. PADDING cells are keepalives: the writer sends one after
// a quiet KeepaliveInterval and the reader drops them; a link on which
// nothing arrives for IdleTimeout is closed.
//
// Each link has two goroutines. The writer owns the connection's write
// side: it takes every queued cell at once, copies them into a buffered
// writer (many cells per TLS record) and flushes when the queue is empty.
// The queue is bounded in bytes (SendQueueBytes): SendCell blocks while it
// is full, which back-pressures whoever produces the cells. The reader owns
// the read side and calls the handlers in order; a slow handler
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
// Closing: Link.Close is clean (flush, TLS close_notify, TCP half-close,
// drain until the peer closes, all bounded by CloseTimeout) and does not
// wait; Link.Done tells when the goroutines are gone. Errors (protocol
// violations, timeouts) cut the connection at once. Links.Close closes
// everything and waits.
package circuits
