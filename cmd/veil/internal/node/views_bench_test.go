package node

import (
	"context"
	"io"
	"testing"
	"time"

	"veil/cmd/veil/internal/config"
)

// What watching a node costs it: a /metrics scrape and a dashboard
// snapshot (one a second per open page), beside Status (what /api/v1/status
// and `veil status` take), on a node of a 7-node network in this process.
func BenchmarkViews(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes := benchNet(b, ctx, 7)
	n := nodes[len(nodes)-1]
	b.Run("Status", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = n.Status(ctx)
		}
	})
	b.Run("DashboardSnapshot", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = n.dashboardView(ctx)
		}
	})
	b.Run("MetricsScrape", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			n.WriteMetrics(io.Discard)
		}
	})
}

// benchNet is startNet for a benchmark.
func benchNet(b *testing.B, ctx context.Context, count int) []*Node {
	b.Helper()
	var nodes []*Node
	for i := range count {
		c := config.Default()
		c.Listen, c.HTTP, c.DataDir, c.AllowPrivate = "127.0.0.1:0", "127.0.0.1:0", b.TempDir(), true
		c.Control.Listen, c.SOCKS = "", ""
		c.Tunnels.MinCircuits, c.Tunnels.MaxCircuits = 2, 2
		if i == 0 {
			c.Roles.Bridge = true
		} else {
			c.Bridges = []string{nodes[0].BridgeLine()}
		}
		n, err := Start(Options{Config: c})
		if err != nil {
			b.Fatal(err)
		}
		go n.Run(ctx)
		b.Cleanup(func() { n.Close() })
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		for deadline := time.Now().Add(30 * time.Second); n.dir.Len() < count-2 || len(n.sw.Origins()) == 0; {
			if time.Now().After(deadline) {
				b.Fatal("the network did not come up in 30 s")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nodes
}
