package config

import (
	"net/netip"
	"os"
	"time"
)

// Facilitator are the settings of the facilitator role (roles.facilitator:
// the BitTorrent side) and of the facilitators an ORDB asks.
type Facilitator struct {
	// Peers are BitTorrent peers (IP:PORT) dialled for every torrent.
	Peers []string `toml:"peers"`
	// DHTBootstrap are BitTorrent DHT nodes (IP:PORT) the passive,
	// get_peers-only DHT starts from; none: no DHT.
	DHTBootstrap []string `toml:"dht_bootstrap"`
	// Blocklist is a PeerGuardian-format file of addresses never dialled.
	Blocklist string `toml:"blocklist"`
	// MetadataTimeout bounds fetching a torrent's info dictionary.
	MetadataTimeout string `toml:"metadata_timeout"`
	// Capacity is the most piece data held per torrent.
	Capacity string `toml:"capacity"`
	// Known are facilitators (ID@IP:PORT) the node's ORDB asks before
	// those it finds in the DHT.
	Known []string `toml:"known"`
}

func defaultFacilitator() Facilitator {
	return Facilitator{Peers: []string{}, DHTBootstrap: []string{}, MetadataTimeout: "60s", Capacity: "32MiB", Known: []string{}}
}

// validate reports the first bad facilitator setting.
func (f Facilitator) validate() error {
	for _, p := range f.Peers {
		if ap, err := netip.ParseAddrPort(p); err != nil || ap.Port() == 0 {
			return &Error{"facilitator.peers", p, "want IP:PORT of a BitTorrent peer (no host names: resolving them would leak what is fetched)"}
		}
	}
	for _, p := range f.DHTBootstrap {
		if ap, err := netip.ParseAddrPort(p); err != nil || ap.Port() == 0 {
			return &Error{"facilitator.dht_bootstrap", p, "want IP:PORT of a BitTorrent DHT node"}
		}
	}
	if f.Blocklist != "" {
		if _, err := os.Stat(f.Blocklist); err != nil {
			return &Error{"facilitator.blocklist", f.Blocklist, "want the path of a readable PeerGuardian blocklist, or \"\" for none"}
		}
	}
	if _, err := f.MetadataTimeoutDuration(); err != nil {
		return err
	}
	if n, err := f.CapacityBytes(); err != nil || n < 1<<20 {
		return &Error{"facilitator.capacity", f.Capacity, "want a size of at least 1MiB, like \"32MiB\""}
	}
	for _, k := range f.Known {
		if _, err := ParseBridge(k); err != nil {
			return &Error{"facilitator.known", k, "want ID@IP:PORT with ID the facilitator's 40-hex-digit node ID"}
		}
	}
	return nil
}

// MetadataTimeoutDuration is facilitator.metadata_timeout.
func (f Facilitator) MetadataTimeoutDuration() (time.Duration, error) {
	return duration("facilitator.metadata_timeout", f.MetadataTimeout)
}

// CapacityBytes is facilitator.capacity.
func (f Facilitator) CapacityBytes() (int64, error) {
	n, err := ParseSize(f.Capacity)
	if err != nil || n > 1<<40 {
		return 0, &Error{"facilitator.capacity", f.Capacity, "want a size like \"32MiB\""}
	}
	return int64(n), nil
}
