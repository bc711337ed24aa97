package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// The main job end to end with --once: real nodes on 127.0.0.1, a video
// and a file published at two of them, advertised to their ORDBs,
// fetched at a third through circuits to its own ORDBs, every chunk
// verified and the bytes compared.
func TestTestnet(t *testing.T) {
	for _, args := range [][]string{
		{"-size", "300001"},
		{"-size", "0", "-video", "embedded"},
	} {
		var out, errb bytes.Buffer
		code := run(append([]string{"testnet", "--once", "-nodes", "7", "-dir", t.TempDir()}, args...), &out, &errb)
		if code != 0 {
			t.Fatalf("%v: exit %d\nstdout: %s\nstderr: %s", args, code, out.String(), errb.String())
		}
		for _, want := range []string{
			"the network is up", "published the video at node", "published the file at node",
			"which announce themselves in the DHT", "fetching the video at node", "(its ORDB)",
			"fetched the video:", "fetched the file:", "every chunk verified", "ok: every fetch verified",
		} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%v: output lacks %q:\n%s", args, want, out.String())
			}
		}
		if strings.Contains(out.String(), "dashboard of the fetching node") {
			t.Errorf("--once printed the dashboard and waited")
		}
		if args[1] == "0" && !strings.Contains(out.String(), "built into veil") {
			t.Errorf("-video embedded: %s", out.String())
		}
		t.Logf("%v:\n%s", args, out.String())
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Without --once the network keeps running, serving the dashboard and
// the metrics at the address it printed, until the context ends (Ctrl-C).
func TestTestnetKeepsRunning(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- runTestnet(ctx, &out, testnetConfig{nodes: 7, hops: 3, size: 20_000, video: "embedded", http: "127.0.0.1:0", dir: t.TempDir()})
	}()
	re := regexp.MustCompile(`http://127\.0\.0\.1:\d+/\?k=[0-9a-f]{32}`)
	var url string
	for deadline := time.Now().Add(90 * time.Second); url == ""; {
		select {
		case err := <-done:
			t.Fatalf("testnet returned before Ctrl-C: %v\n%s", err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		url = re.FindString(out.String())
		if url == "" && time.Now().After(deadline) {
			t.Fatalf("no dashboard address printed:\n%s", out.String())
		}
	}
	for _, u := range []string{url, strings.Replace(url, "/?k=", "/metrics?k=", 1)} {
		res, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || !(strings.Contains(string(b), "veil-key") || strings.Contains(string(b), "veil_window_chunks_received_total")) {
			t.Fatalf("%s: %d\n%s", u, res.StatusCode, b)
		}
		// The fetching node's metrics count the window's chunks.
		if strings.Contains(u, "metrics") && regexp.MustCompile(`(?m)^veil_window_chunks_received_total 0$`).Match(b) {
			t.Fatalf("no chunk counted after the fetches:\n%s", b)
		}
	}
	// The video, through the fetching node's gateway.
	vurl := regexp.MustCompile(`http://127\.0\.0\.1:\d+/content/[0-9a-f]{40}\?k=[0-9a-f]{32}`).FindString(out.String())
	if vurl == "" {
		t.Fatalf("no video address printed:\n%s", out.String())
	}
	res, err := http.Get(vurl)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !bytes.Equal(b, sampleVideo) || res.Header.Get("Content-Type") != "video/mp4" {
		t.Fatalf("%s: %d, %s, %d bytes (want the %d of the sample)", vurl, res.StatusCode, res.Header.Get("Content-Type"), len(b), len(sampleVideo))
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("after Ctrl-C: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("testnet did not stop after Ctrl-C")
	}
	if !strings.Contains(out.String(), "stopping the network") {
		t.Fatalf("output:\n%s", out.String())
	}
}
