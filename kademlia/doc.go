// Package kademlia is veil's DHT: a 160-bucket Kademlia routing table,
// iterative FIND_NODE / FIND_VALUE lookups, signed provider records kept
// with a TTL and republished, bootstrap through bridges, and a
// deterministic simulator.
//
// The protocol logic is pure and not safe for concurrent use:
//
//   - Table: buckets of K contacts by XOR distance, least recently seen
//     first. A newcomer to a full bucket makes Seen return the oldest
//     contact to PING; only if that ping fails (Failed) does the newcomer
//     take its place. At most MaxPerSubnet contacts of one /24 (IPv4) or
//     /48 (IPv6) share a bucket.
//   - Lookup: events in (Answer, Fail, Tick), contacts to query out. Alpha
//     RPCs in flight per path (AlphaFindValue for FIND_VALUE, 4 per the
//     Peersm specification) on Paths disjoint paths (S/Kademlia); each path
//     ends when its K closest contacts seen have all answered.
//   - Store: provider records, verified, bounded, expiring; quotas per
//     sender and per /24 (/48), and eviction of the least diverse subnet's
//     oldest record instead of refusal when a key or the store is full.
//
// Hostile peers: a contact's IP comes from the link (Handle's ip), never
// from what it claims; IDs must solve the ID puzzle (proto.IDWork,
// Config.IDWorkBits) to enter the table, a lookup or the store; Node
// serves its inbox one peer at a time and bounds the send slots one peer
// can hold.
//   - Core: one node's whole DHT behaviour. Handle(from, msg, now),
//     Tick(now) and the calls FindNode, FindValue, Provide, Bootstrap take
//     inputs; Ready returns the RPCs to send and the finished operations.
//
// Two drivers run a Core: Node, the service with a goroutine that owns the
// core and talks through a Transport (MemNetwork in memory; circuits links
// in a real node, whose DHT payloads travel in proto.CmdDHT var cells), and
// Sim, which drives thousands of cores through one event queue in virtual
// time with latency, loss and churn, seeded so a run replays exactly.
package kademlia
