// Package circuits carries veil's cells between nodes: node identity (the
// Ed25519 identity key, the node ID derived from it and the rotating X25519
// onion key) and the onion circuits built over links: the Switch (CREATE2,
// relaying, EXTEND2, DESTROY; see its doc comment), origin Circuits with
// their Streams and SENDME flow control, and the Pool that keeps
// MinCircuits..MaxCircuits built. The handshake, per-hop crypto and window
// counters are pure and live in package onion. The links themselves (TLS
// 1.3 over TCP, authenticated by the identity keys) live in package link;
// the circuit layer sees them only as link.Conn and link.Dialer, which
// package link/linktest implements in memory.
//
// # Identity
//
// A node's ID is proto.NodeIDFromKey(identity public key). The identity key
// signs the node descriptor (proto.NodeDescriptor), which names the current
// onion key. LoadOrCreateIdentity keeps both keys in a data directory;
// NewEphemeralIdentity makes a per-run identity, as the Peersm
// specification wants (new IDs each session, so users cannot be tracked by
// them). Links need only the identity key: link.NewLinks(id.Key, cfg).
package circuits
