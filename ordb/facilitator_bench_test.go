package ordb

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/storage"

	"veil/facilitator"
)

// The 100 MB torrent and its seeder are shared by BenchmarkDirectTorrent
// and BenchmarkFacilitatorFetch, so that both download the same torrent
// from the same seeder in the same run.
const facBenchSize = 100 << 20

var facBench struct {
	once sync.Once
	tf   *torrentFixture
	dir  string
	stop func()
	err  error
}

func facBenchFixture(b *testing.B) *torrentFixture {
	facBench.once.Do(func() {
		if facBench.dir, facBench.err = os.MkdirTemp("", "veil-facbench"); facBench.err != nil {
			return
		}
		facBench.tf, facBench.stop, facBench.err = seedTorrentIn(facBench.dir, facBenchSize, 256<<10, "")
	})
	if facBench.err != nil {
		b.Fatal(facBench.err)
	}
	return facBench.tf
}

// TestMain removes the benchmarks' shared torrent once every test and
// benchmark has run.
func TestMain(m *testing.M) {
	code := m.Run()
	if facBench.stop != nil {
		facBench.stop()
	}
	if facBench.dir != "" {
		os.RemoveAll(facBench.dir)
	}
	os.Exit(code)
}

// BenchmarkDirectTorrent is the baseline: an ordinary anacrolix client
// (file storage in a temporary directory, every piece wanted) downloads
// the 100 MB torrent from the shared seeder on 127.0.0.1.
func BenchmarkDirectTorrent(b *testing.B) {
	b.StopTimer()
	tf := facBenchFixture(b)
	b.SetBytes(facBenchSize)
	var total time.Duration
	for range b.N {
		dir := b.TempDir()
		cfg := torrent.NewDefaultClientConfig()
		cfg.DataDir = dir
		cfg.DefaultStorage = storage.NewFile(dir)
		cfg.ListenHost = func(string) string { return "127.0.0.1" }
		cfg.ListenPort = 0
		cfg.NoDHT, cfg.DisablePEX, cfg.DisableTrackers, cfg.DisableUTP, cfg.DisableIPv6 = true, true, true, true, true
		cfg.NoDefaultPortForwarding = true
		cfg.Slogger = slog.New(slog.DiscardHandler)
		cl, err := torrent.NewClient(cfg)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		b.StartTimer()
		t, err := cl.AddTorrent(tf.mi)
		if err != nil {
			b.Fatal(err)
		}
		t.AddPeers([]torrent.PeerInfo{{Addr: tcpAddrOf(tf.seeder)}})
		t.DownloadAll()
		select {
		case <-t.Complete().On():
		case <-time.After(5 * time.Minute):
			b.Fatal("direct download did not complete")
		}
		b.StopTimer()
		total += time.Since(start)
		cl.Close()
		os.RemoveAll(dir)
	}
	b.ReportMetric(float64(facBenchSize)*float64(b.N)/total.Seconds()/1e6, "MB/s")
}

// BenchmarkFacilitatorFetch: a requester fetches the same torrent through
// four 3-hop circuits to four ORDBs, each asking the facilitator (found in
// the DHT, reached through a circuit), whose freerider client downloads
// from the same seeder with its keep-nothing store. The requester checks
// the info dictionary and every piece hash; the bytes are discarded.
func BenchmarkFacilitatorFetch(b *testing.B) {
	b.StopTimer()
	tf := facBenchFixture(b)
	fn := newFacNetwork(b, []netip.AddrPort{tf.seeder}, nil, 4)
	b.SetBytes(facBenchSize)
	var total time.Duration
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		start := time.Now()
		b.StartTimer()
		res, err := facilitator.Get(ctx, facilitator.GetConfig{Target: facilitator.Magnet{InfoHash: tf.ih}, Open: fn.open, Workers: 4, SegmentBytes: 4 << 20}, io.Discard)
		b.StopTimer()
		cancel()
		total += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		if res.Length != facBenchSize {
			b.Fatalf("fetched %d bytes", res.Length)
		}
	}
	b.ReportMetric(float64(facBenchSize)*float64(b.N)/total.Seconds()/1e6, "MB/s")
	if up := fn.client.Stats().BytesWrittenData; up != 0 {
		b.Fatalf("facilitator uploaded %d bytes", up)
	}
}

func tcpAddrOf(p netip.AddrPort) *net.TCPAddr { return net.TCPAddrFromAddrPort(p) }
