package facilitator

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/storage"
)

const benchSize = 100 << 20

// benchSetup makes the 100 MB torrent and an anacrolix seeder of it on
// 127.0.0.1, both gone when the benchmark function returns.
func benchSetup(b *testing.B) (*testTorrent, netip.AddrPort) {
	tt := makeTorrent(b, "bench.bin", testPieceLen, benchSize)
	return tt, startAnacrolixSeeder(b, tt)
}

// BenchmarkDirectTorrent is the baseline: an ordinary anacrolix client
// (default piece storage in a temporary directory, all pieces wanted)
// downloads the 100 MB torrent from a seeder on 127.0.0.1.
func BenchmarkDirectTorrent(b *testing.B) {
	b.StopTimer()
	tt, seeder := benchSetup(b)
	b.SetBytes(benchSize)
	var total time.Duration
	for range b.N {
		dir := b.TempDir()
		cfg := torrent.NewDefaultClientConfig()
		cfg.DataDir = dir
		cfg.DefaultStorage = storage.NewFile(dir)
		cfg.ListenHost = func(string) string { return "127.0.0.1" }
		cfg.ListenPort = 0
		cfg.NoDHT, cfg.DisablePEX, cfg.DisableTrackers, cfg.DisableUTP = true, true, true, true
		cfg.NoDefaultPortForwarding = true
		cfg.DisableIPv6 = true
		cfg.Slogger = slog.New(slog.DiscardHandler)
		cl, err := torrent.NewClient(cfg)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		b.StartTimer()
		t, err := cl.AddTorrent(tt.mi)
		if err != nil {
			b.Fatal(err)
		}
		t.AddPeers([]torrent.PeerInfo{{Addr: tcpAddr(seeder)}})
		t.DownloadAll()
		select {
		case <-t.Complete().On():
		case <-time.After(5 * time.Minute):
			b.Fatal("direct download did not complete")
		}
		b.StopTimer()
		total += time.Since(start)
		cl.Close()
		os.RemoveAll(filepath.Join(dir, tt.mi.HashInfoBytes().HexString()))
	}
	b.ReportMetric(float64(benchSize)*float64(b.N)/total.Seconds()/1e6, "MB/s")
}

// BenchmarkFreeriderFetch fetches the same torrent through the freerider:
// keep-nothing storage of 16 pieces (4 MiB) and in-order delivery, each
// piece handed to the caller and dropped.
func BenchmarkFreeriderFetch(b *testing.B) {
	b.StopTimer()
	tt, seeder := benchSetup(b)
	b.SetBytes(benchSize)
	var total time.Duration
	for range b.N {
		c, err := New(testConfig())
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		start := time.Now()
		b.StartTimer()
		tr, err := c.Open(ctx, tt.ih, OpenOptions{Peers: []netip.AddrPort{seeder}})
		if err != nil {
			b.Fatal(err)
		}
		var n int64
		for p, err := range tr.Pieces(ctx, 0, tr.Info().NumPieces()) {
			if err != nil {
				b.Fatal(err)
			}
			n += int64(len(p.Data))
		}
		b.StopTimer()
		total += time.Since(start)
		if n != benchSize {
			b.Fatalf("fetched %d bytes", n)
		}
		tr.Close()
		c.Close()
	}
	b.ReportMetric(float64(benchSize)*float64(b.N)/total.Seconds()/1e6, "MB/s")
}
