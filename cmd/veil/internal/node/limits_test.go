package node

import (
	"testing"

	"veil/cmd/veil/internal/config"
)

// The [limits] keys and allow_private reach the link layer and the switch.
func TestLimitsReachLinksAndSwitch(t *testing.T) {
	c := config.Default()
	c.Limits.MaxQueued = "8MiB"
	c.Limits.MaxLinks = 100
	c.Limits.CreateRate = 5
	lc, sc := linkConfig(c), switchConfig(c)
	if lc.MaxLinks != 100 || lc.MaxInbound != 75 || lc.MaxOutbound != 75 || lc.MaxInboundPerSubnet != 16 || lc.MaxHandshakes != 64 {
		t.Fatalf("link config %+v", lc)
	}
	if sc.MaxQueuedBytes != 8<<20 || sc.CreateRate != 5 || sc.AllowPrivateExtend {
		t.Fatalf("switch config: queued %d, rate %v, private %v", sc.MaxQueuedBytes, sc.CreateRate, sc.AllowPrivateExtend)
	}
	if err := lc.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := sc.Validate(); err != nil {
		t.Fatal(err)
	}
	c.AllowPrivate = true
	if lc, sc := linkConfig(c), switchConfig(c); lc.MaxInboundPerSubnet != 0 || !sc.AllowPrivateExtend {
		t.Fatalf("allow_private: per-subnet %d, private extend %v", lc.MaxInboundPerSubnet, sc.AllowPrivateExtend)
	}
}
