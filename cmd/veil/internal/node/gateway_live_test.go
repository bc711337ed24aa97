package node

import (
	"bytes"
	"context"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"veil/cmd/veil/internal/gateway"
	"veil/proto"
	"veil/window"
)

// A live stream over the network: published at one node as it is
// produced, read at another node's gateway through that node's ORDBs,
// from where DB_LIVE_START says, as one growing response whose bytes are
// the stream's.
func TestGatewayLiveNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("a network and a live stream of several seconds; .ci/run runs it without -short")
	}
	checkLeaks(t) // and its watchdog
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes := startNetwork(t, ctx, 7)
	const size = 8 << 20
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i/997)
	}
	pr, pw := io.Pipe()
	named := make(chan proto.HashName, 1)
	published := make(chan error, 1)
	go func() {
		_, err := nodes[1].PublishLive(ctx, "video/mp2t", pr, func(n proto.HashName) { named <- n }, nil)
		published <- err
	}()
	// limit is how far the producer may go: unbounded until the reader
	// asks, then what the reader has read plus two windows (below the
	// four windows a live fetch keeps behind the newest chunk before it
	// rightly jumps ahead). A loaded machine slows the network, not the
	// clock: without the bound a real-time producer leaves a starved
	// reader behind what is kept.
	var limit atomic.Int64
	limit.Store(math.MaxInt64)
	lead := int64(2 * window.DefaultConfig(proto.HashName{}).MinWindow * proto.ChunkSize) // two live windows
	// The producer: 5 kB every 20 ms (250 kB/s, a video's rate; the
	// publisher keeps 4 windows, ~2 MB, of it: 8 s), until the test ends.
	produced := make(chan struct{})
	var wrote atomic.Int64
	go func() {
		defer close(produced)
		defer pw.Close()
		every := 20 * time.Millisecond
		if underRace {
			every *= 4 // everything runs slower: so does the video
		}
		tick := time.NewTicker(every)
		defer tick.Stop()
		for off := 0; off+5000 <= size; {
			if int64(off+5000) <= limit.Load() {
				if _, err := pw.Write(data[off : off+5000]); err != nil {
					return
				}
				off += 5000
				wrote.Store(int64(off))
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	name := <-named
	getter := nodes[len(nodes)-1]
	// Once the stream has grown well past two windows (~1 MB), its ORDBs
	// having heard of it (every second) since: a reader then starts in
	// the middle.
	waitFor(t, 30*time.Second, "the stream to grow", func() bool {
		h, err := nodes[1].served.Head(name)
		return err == nil && h.Length*proto.ChunkSize > 1600<<10
	})
	// The stream stops growing while the getter finds where to start:
	// from then on it grows as fast as the reader follows.
	limit.Store(wrote.Load())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, contentURL(getter, name.String()), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	off, err := strconv.ParseInt(resp.Header.Get(gateway.LiveOffsetHeader), 10, 64)
	if resp.StatusCode != 200 || resp.ContentLength != -1 || err != nil || resp.Header.Get("Content-Type") != "video/mp2t" {
		t.Fatalf("live answer: %d, length %d, offset %q, %v", resp.StatusCode, resp.ContentLength, resp.Header.Get(gateway.LiveOffsetHeader), resp.Header)
	}
	if off%proto.ChunkSize != 0 || off >= size || off == 0 {
		t.Fatalf("live offset %d", off)
	}
	// 128 kB: several GETs, while the stream grows in real time.
	const want = 128 << 10
	got := make([]byte, min(want, size-int(off)))
	limit.Store(off + lead)
	for n := 0; n < len(got); {
		m, err := resp.Body.Read(got[n:])
		n += m
		limit.Store(off + int64(n) + lead)
		if err != nil && n < len(got) {
			t.Fatalf("reading the live stream from %d: %d bytes, %v", off, n, err)
		}
	}
	if !bytes.Equal(got, data[off:off+int64(len(got))]) {
		// A fetch jumps ahead only when it falls more than the kept
		// windows behind, which the producer's bound rules out.
		t.Fatalf("the live bytes from %d differ from the stream's (fetch skipped %d chunks, store restarts %d)",
			off, getter.metrics.liveSkipped.Load(), getter.cache.Stats().LiveRestarts)
	}
	t.Logf("read %d bytes of the live stream from offset %d (chunk %d)", len(got), off, off/proto.ChunkSize)
	resp.Body.Close()
	cancel()
	<-produced
	<-published
}
