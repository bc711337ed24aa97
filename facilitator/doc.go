// Package facilitator will fetch content from BitTorrent by infohash or
// magnet link as a pure freerider (anacrolix/torrent: no upload, no
// announce, passive DHT) and relay it in order through circuits.
//
// It is empty until the facilitator issue is taken; see ../shared/DESIGN.md.
package facilitator
