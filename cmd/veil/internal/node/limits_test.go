package node

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"veil/circuits"
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

// A node's circuits start at its guards, which it keeps in its data
// directory and shows in its status with what the budgets did.
func TestNodeCircuitsStartAtGuards(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bc := testConfig(t, t.TempDir())
	bc.Roles.Bridge = true
	bridge := startTest(t, ctx, bc)
	nodes := []*Node{bridge}
	for range 4 {
		nodes = append(nodes, startTest(t, ctx, testConfig(t, t.TempDir(), bridge.BridgeLine())))
	}
	n := nodes[len(nodes)-1]
	waitFor(t, 30*time.Second, "a built circuit", func() bool { return len(n.pool.FindCircuits()) > 0 })
	st := n.Status(ctx)
	if len(st.Guards) == 0 || st.Budget.MaxCells == 0 {
		t.Fatalf("status: guards %v, budget %+v", st.Guards, st.Budget)
	}
	for _, c := range n.pool.FindCircuits() {
		if first := c.Path()[0].ID.String(); !slices.Contains(st.Guards, first) {
			t.Fatalf("circuit starts at %s, not at a guard %v", first, st.Guards)
		}
	}
	if _, err := os.Stat(filepath.Join(n.dataDir, circuits.GuardsFile)); err != nil {
		t.Fatalf("guards not kept in the data directory: %v", err)
	}
}
