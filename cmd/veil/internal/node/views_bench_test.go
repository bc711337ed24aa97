package node

import (
	"context"
	"io"
	"testing"
	"time"
)

// What watching a node costs it: a /metrics scrape and a dashboard
// snapshot (one a second per open page), beside Status (what /api/v1/status
// and `veil status` take), on a node of a 7-node network in this process.
func BenchmarkViews(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes := startNet(b, ctx, 7)
	waitFor(b, 30*time.Second, "circuits", func() bool { return len(nodes[6].sw.Origins()) > 0 })
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
