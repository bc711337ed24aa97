package node_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"veil/cmd/veil/internal/gateway"
	"veil/cmd/veil/internal/node"
)

// The gateway's benchmarks, on the network of node processes that
// BenchmarkNodeGet uses (run them in the same `go test -bench` to
// compare): 100 MB put at node1, read through another node's gateway.

// putRandom puts size random bytes at node1 and returns the hash_name.
func putRandom(b *testing.B, tn *testNet, size int, seed byte, tag string) string {
	b.Helper()
	data := make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{seed}).Read(data)
	src := filepath.Join(tn.pn.Root, "content-"+tag)
	if err := os.WriteFile(src, data, 0o600); err != nil {
		b.Fatal(err)
	}
	defer os.Remove(src)
	put := spawn(b, tn.pn, "put-"+tag, "", "put", "--type", "video/mp4", "--data-dir", tn.dirs[1], src)
	if err := put.Wait(5 * time.Minute); err != nil {
		b.Fatalf("put: %v\n%s", err, tn.pn.Log("put-"+tag))
	}
	hash := regexp.MustCompile(`(?m)^[0-9a-f]{40}$`).FindString(tn.pn.Log("put-" + tag))
	if hash == "" {
		b.Fatalf("put printed no hash_name:\n%s", tn.pn.Log("put-"+tag))
	}
	return hash
}

// gatewayURL is the content URL of hash at node i, with its token.
func gatewayURL(b *testing.B, tn *testNet, i int, hash string) string {
	b.Helper()
	cookie, err := os.ReadFile(filepath.Join(tn.dirs[i], node.CookieFile))
	if err != nil {
		b.Fatal(err)
	}
	base := tn.clients[i].Base
	return base + gateway.ContentPrefix + hash + "?k=" + gateway.Token(strings.TrimSpace(string(cookie)), hash)
}

// BenchmarkGatewaySeek measures a player's seek: a Range request at 90 %
// of a 100 MB content whose download (started by a first request at 0)
// has not got there, to the range's first byte. Each sample is a getter
// that held none of the content; ms/first-byte is their median. The
// baseline, ms/start, is the first request's (bytes=0-0 at a node that
// holds nothing): the descriptor and chunk 0 through the same circuits.
// Each sample's download is let finish before the next sample starts: a
// seek is measured beside its own download only, not behind the earlier
// samples' downloads from the same publisher.
func BenchmarkGatewaySeek(b *testing.B) {
	if testing.Short() {
		b.Skip("starts a network of 12 node processes")
	}
	const size = 100 << 20
	const samples = 5
	tn := startNet(b, benchNodes)
	var all, starts []time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		hash := putRandom(b, tn, size, byte(i+1), fmt.Sprintf("seek%d", i))
		for s := range samples {
			g := benchNodes - 1 - s%(benchNodes-2)
			url := gatewayURL(b, tn, g, hash)
			// The first request starts the fetch and waits for the
			// descriptor; its byte is at 0.
			d0, err := rangeFirstByte(url, "bytes=0-0")
			if err != nil {
				b.Fatalf("node%d: start: %v", g, err)
			}
			starts = append(starts, d0)
			at := int64(size) * 9 / 10
			b.StartTimer()
			d, err := rangeFirstByte(url, fmt.Sprintf("bytes=%d-%d", at, at+(1<<20)-1))
			b.StopTimer()
			if err != nil {
				b.Fatalf("node%d: seek: %v", g, err)
			}
			st := status(b, tn.clients[g])
			for _, tr := range st.Transfers {
				if tr.HashName == hash {
					b.Logf("node%d: first byte at 90%% after %v; download at %d of %d chunks", g, d, tr.Held, tr.Total)
					if tr.Held*10 >= tr.Total*9 {
						b.Errorf("node%d: the download had reached 90%% (%d of %d chunks): not a seek ahead", g, tr.Held, tr.Total)
					}
				}
			}
			all = append(all, d)
			waitFetched(b, tn, g, hash)
		}
	}
	slices.Sort(all)
	slices.Sort(starts)
	b.ReportMetric(float64(starts[len(starts)/2].Microseconds())/1000, "ms/start")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "ms/first-byte")
	b.ReportMetric(float64(all[len(all)-1].Microseconds())/1000, "ms/first-byte-max")
}

// rangeFirstByte asks url for rng and returns the time to the first body
// byte; it reads the answer whole.
func rangeFirstByte(url, rng string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Range", rng)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	var one [1]byte
	if _, err := io.ReadFull(resp.Body, one[:]); err != nil {
		return 0, err
	}
	d := time.Since(start)
	_, err = io.Copy(io.Discard, resp.Body)
	return d, err
}

// BenchmarkGatewayStream measures a player reading 100 MB through the
// gateway of a node that holds none of it: one GET of the whole content,
// served while the node downloads it (stream-MB/s: bytes over the time
// to the last byte). Compare with BenchmarkNodeGet's fetch-MB/s.
func BenchmarkGatewayStream(b *testing.B) {
	if testing.Short() {
		b.Skip("starts a network of 12 node processes")
	}
	const size = 100 << 20
	tn := startNet(b, benchNodes)
	b.SetBytes(size)
	var total time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		hash := putRandom(b, tn, size, byte(100+i), fmt.Sprintf("stream%d", i))
		g := benchNodes - 1 - i%(benchNodes-2)
		url := gatewayURL(b, tn, g, hash)
		b.StartTimer()
		start := time.Now()
		resp, err := http.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		b.StopTimer()
		took := time.Since(start)
		if err != nil || n != size || resp.StatusCode != 200 {
			b.Fatalf("node%d: %d, %d bytes, %v", g, resp.StatusCode, n, err)
		}
		total += took
		b.Logf("round %d: 100 MB through node%d's gateway in %v", i, g, took)
	}
	b.ReportMetric(float64(size)*float64(b.N)/total.Seconds()/1e6, "stream-MB/s")
}

// waitFetched waits until node i holds the whole of hash (its gateway's
// fetch ended).
func waitFetched(b *testing.B, tn *testNet, i int, hash string) {
	b.Helper()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(5 * time.Minute); ; {
		running := false
		for _, tr := range status(b, tn.clients[i]).Transfers {
			if tr.HashName == hash && tr.Held < tr.Total {
				running = true
			}
		}
		if !running {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("node%d: the download of %s still runs after 5 minutes", i, hash)
		}
		<-tick.C
	}
}
