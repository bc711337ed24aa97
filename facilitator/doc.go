// Package facilitator is a facilitator's BitTorrent side: it fetches a
// torrent by infohash or magnet link as a pure freerider and hands out its
// verified pieces in order, keeping nothing once they are handed out.
//
// An ORDB that finds no veil source for a hash_name asks a Fetcher (the
// Client here); the hash_name of a torrent is its v1 infohash. The Fetcher
// opens a Transfer whose Info().Bytes() is the bencoded info dictionary and
// whose Pieces sequence yields pieces [first, end) in order. The requester
// checks both end to end with VerifyInfo and Info.VerifyPiece, so neither
// the facilitator nor an ORDB relaying the bytes can change them.
//
// On the veil side, Server answers the DB_QUERY that ORDBs send through
// their circuits to a facilitator (ServiceDest): the torrent form of
// DB_CONNECTED carrying the info dictionary, then the content as 498-byte
// chunks in DB_DATA, in order. Get is the requester's side: it asks its
// own ORDBs through its circuits, checks the info dictionary and every
// piece, and writes the torrent, or one file of it, in order. PassiveDHT is
// a read-only BitTorrent DHT search (get_peers only) the Client can use as
// its PeerFinder.
//
// # What the Client does and does not do on the BitTorrent side
//
//   - Dials peers over TCP only; opens no listening socket and no UDP
//     socket (anacrolix's TCP and uTP listeners are disabled and a dialer
//     is added instead), so it accepts no connection and answers no DHT
//     query.
//   - Uploads no content (NoUpload and per-torrent DisallowDataUpload),
//     never seeds.
//   - Announces nothing: no trackers (a tracker announce publishes us as a
//     peer of the torrent; magnet tr= are reported and ignored), no DHT
//     node of its own, no PEX, no UPnP/NAT-PMP, no web seeds, no
//     webtorrent, no HTTP at all (a refusing transport is installed).
//   - Peers come from the magnet's x.pe (when the Client is used
//     directly; through veil only the infohash reaches the facilitator),
//     the configured Peers, and an optional PeerFinder that must only
//     search (get_peers), never announce, such as PassiveDHT.
//   - Advertises only ut_metadata and ignores peers' ut_holepunch and
//     ut_pex, so it never asks a peer for a holepunch rendezvous (which
//     would tell that peer whom it tries to reach) nor relays one.
//   - Identifies as Transmission 3.00 (peer ID prefix, HTTP user agent),
//     with a fresh peer ID per Client and no "v" in the extended handshake:
//     nothing names veil or its module path.
//   - Honours a PeerGuardian blocklist, refuses non-global addresses unless
//     allowed, and drops and bans a peer that sent nothing useful for
//     StallTimeout while data was awaited; anacrolix itself bans peers that
//     sent pieces failing their hash.
//   - Holds at most Capacity bytes of piece data per transfer, in memory:
//     a piece is kept from its first chunk until the reader is done with
//     it, then dropped; asked for again, it is fetched again.
//
// Known leak: anacrolix sends HAVE messages (or a bitfield on a new
// connection) for pieces it holds verified, so a transfer's peers learn
// which pieces this facilitator completed, which they mostly infer from
// its requests anyway. Those pieces are never served.
//
// anacrolix's own logs pair peer addresses with infohashes, so they are
// discarded.
package facilitator
