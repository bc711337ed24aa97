package node

import (
	"veil/circuits"
	"veil/circuits/link"
	"veil/cmd/veil/internal/config"
)

// linkConfig is the link layer's configuration from the [limits] keys.
// allow_private lifts the per-subnet bound: a test network's nodes all
// share 127.0.0.1.
func linkConfig(cfg config.Config) link.Config {
	lc := link.DefaultConfig()
	l := cfg.Limits
	lc.MaxLinks = l.MaxLinks
	// Three quarters for each direction: neither can starve the other,
	// and together they may use every slot.
	lc.MaxInbound = max(l.MaxLinks*3/4, 1)
	lc.MaxOutbound = max(l.MaxLinks*3/4, 1)
	lc.MaxHandshakes = l.MaxHandshakes
	lc.MaxInboundPerSubnet = l.MaxInboundPerSubnet
	if cfg.AllowPrivate {
		lc.MaxInboundPerSubnet = 0
	}
	if rate, burst, _ := cfg.BandwidthLimit(); rate > 0 { // Validate checked it
		lc.WriteLimit = link.NewWriteLimit(int(rate), int(burst))
	}
	return lc
}

// switchConfig is the circuit switch's configuration from the roles, the
// [tunnels] and the [limits] keys. allow_private lets EXTEND2 name
// loopback and private addresses, as a test network on one machine needs.
func switchConfig(cfg config.Config) circuits.SwitchConfig {
	sc := circuits.DefaultSwitchConfig()
	sc.Flags = cfg.Roles.Flags()
	sc.MaxJoinedCircuits = cfg.Tunnels.MaxJoinedCircuits
	if n, err := cfg.MaxQueued(); err == nil { // Validate has checked it
		sc.MaxQueuedBytes = n
	}
	sc.CreateRate = float64(cfg.Limits.CreateRate)
	sc.AllowPrivateExtend = cfg.AllowPrivate
	return sc
}
