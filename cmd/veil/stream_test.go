package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"veil/cmd/veil/internal/config"
	"veil/cmd/veil/internal/node"
)

// `veil stream --play` with no player installed: it prints the gateway
// URL (with its token, which serves the content), says no player was
// found, shows the buffering and ends once the content is whole.
func TestStreamNoPlayer(t *testing.T) {
	dir := isolate(t)
	t.Setenv("PATH", t.TempDir()) // neither mpv nor vlc
	n := startLoneNode(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	data := make([]byte, 300_000)
	rand.Read(data)
	pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
	pub, _ := n.Publish(pctx, "video/mp4", bytes.NewReader(data)) // alone: only the advertisement fails
	pcancel()
	if pub.Size != uint64(len(data)) {
		t.Fatalf("published %+v", pub)
	}
	code, out, errs := runArgs("stream", "--play", "--data-dir", dir, pub.Name.String())
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	url := strings.TrimSpace(out)
	if !regexp.MustCompile(`^http://127\.0\.0\.1:\d+/content/` + pub.Name.String() + `\?k=[0-9a-f]{32}$`).MatchString(url) {
		t.Fatalf("stdout %q is not the content URL", out)
	}
	if !strings.Contains(errs, "no player found") || !strings.Contains(errs, "buffering: 100.0% held") {
		t.Fatalf("stderr: %s", errs)
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, data) {
		t.Fatalf("the URL served %d, %d bytes", resp.StatusCode, len(got))
	}
	// Without the token the URL is refused: a web page cannot guess it.
	resp, err = http.Get(url[:strings.Index(url, "?")])
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("URL without its token: %d", resp.StatusCode)
	}
}

// startLoneNode runs a node alone (no bridge) on 127.0.0.1 with its data
// in dir until the test ends.
func startLoneNode(t *testing.T, dir string) *node.Node {
	t.Helper()
	c := config.Default()
	c.Listen, c.HTTP, c.DataDir, c.AllowPrivate = "127.0.0.1:0", "127.0.0.1:0", dir, true
	c.Control.Listen, c.SOCKS = "", "" // no fixed ports: other tests' nodes may hold them
	n, err := node.Start(node.Options{Config: c})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go n.Run(ctx)
	t.Cleanup(func() { cancel(); n.Close() })
	return n
}
