package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"veil/cmd/veil/internal/gateway"
	"veil/proto"
)

// Live: ffmpeg makes a test pattern in real time and `veil put --live`
// publishes it from standard input; the hash_name comes at once, and
// ffprobe, reading the live URL of the node's gateway while the stream
// grows, sees video frames with increasing timestamps.
func TestPutLiveFFmpeg(t *testing.T) {
	for _, tool := range []string{"ffmpeg", "ffprobe"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (Debian package ffmpeg)", tool)
		}
	}
	dir := isolate(t)
	n := startLoneNode(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ff := exec.CommandContext(ctx, "ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25",
		"-t", "6", "-c:v", "mpeg2video", "-b:v", "400k", "-g", "10", "-f", "mpegts", "-")
	src, err := ff.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var fferr bytes.Buffer
	ff.Stderr = &fferr
	if err := ff.Start(); err != nil {
		t.Fatal(err)
	}
	defer ff.Wait()
	stdin = src
	defer func() { stdin = os.Stdin }()
	outR, outW := io.Pipe()
	var errb bytes.Buffer
	exit := make(chan int, 1)
	go func() {
		code := run([]string{"put", "--live", "--data-dir", dir}, outW, &errb)
		outW.Close()
		exit <- code
	}()
	sc := bufio.NewScanner(outR)
	if !sc.Scan() {
		t.Fatalf("put --live printed nothing: %s", errb.String())
	}
	name, err := proto.ParseHashName(sc.Text())
	if err != nil {
		t.Fatalf("put --live printed %q: %v", sc.Text(), err)
	}
	go io.Copy(io.Discard, outR)
	cookie, err := os.ReadFile(filepath.Join(dir, "api.cookie"))
	if err != nil {
		t.Fatal(err)
	}
	url := gateway.URL(n.APIAddr(), strings.TrimSpace(string(cookie)), name)
	probe := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-probesize", "65536", "-analyzeduration", "1000000",
		"-select_streams", "v:0", "-show_entries", "frame=pts_time", "-read_intervals", "%+#25", "-of", "csv=p=0", url)
	out, err := probe.Output()
	if err != nil {
		t.Fatalf("ffprobe on the live URL: %v\n%s", err, out)
	}
	var times []string
	for _, l := range strings.Fields(string(out)) {
		if l = strings.Trim(l, ","); l != "" && l != "N/A" {
			times = append(times, l)
		}
	}
	if len(times) < 20 {
		t.Fatalf("ffprobe saw %d frames with times on the live URL:\n%s", len(times), out)
	}
	t.Logf("ffprobe saw %d frames, %s .. %s", len(times), times[0], times[len(times)-1])
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("put --live exited %d: %s\nffmpeg: %s", code, errb.String(), fferr.String())
		}
	case <-ctx.Done():
		t.Fatal("put --live did not end with its input")
	}
	if !strings.Contains(errb.String(), "live: ") {
		t.Fatalf("no progress on stderr: %s", errb.String())
	}
}
