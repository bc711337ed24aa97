// Package facilitator will fetch content from BitTorrent by infohash or
// magnet link as a pure freerider (anacrolix/torrent: no upload, no
// announce, passive DHT) and relay it in order through circuits.
//
// It is empty for now; docs/ARCHITECTURE.md says what a facilitator may and
// may not do.
package facilitator
