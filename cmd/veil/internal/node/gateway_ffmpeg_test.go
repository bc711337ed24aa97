package node

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// needTools skips t when one of the tools is missing.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (Debian package ffmpeg)", tool)
		}
	}
}

// runTool runs a tool with a bound and returns its standard output.
func runTool(t *testing.T, ctx context.Context, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

// A real player's demuxer through the gateway: a 30 s MP4 (its index at
// the end, as ffmpeg writes it by default) published at one node and
// fetched through circuits at another, read by ffmpeg and ffprobe over
// HTTP. The download is slowed so that it is still running when ffmpeg,
// seeking to 20 s, has decoded its frame.
func TestGatewayFFmpeg(t *testing.T) {
	needTools(t, "ffmpeg", "ffprobe")
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	video := filepath.Join(dir, "test.mp4")
	runTool(t, ctx, "ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=duration=30:size=320x240:rate=25,noise=alls=30:allf=t+u",
		"-c:v", "mpeg4", "-q:v", "2", "-g", "25", video)
	t.Logf("video of %d bytes", fileSize(t, video))
	data, err := os.ReadFile(video)
	if err != nil {
		t.Fatal(err)
	}
	nodes := startNetwork(t, ctx, 7)
	pub, err := nodes[1].Publish(ctx, "video/mp4", bytes.NewReader(data))
	if err != nil || pub.Advertised == 0 {
		t.Fatalf("publish: %+v %v", pub, err)
	}
	getter := nodes[len(nodes)-1]
	// About 6 s for the whole: a seek costs the bytes in flight (up to a
	// window, ~500 kB, read before the new position's), small beside
	// this ~4 MB video (noise keeps it from compressing).
	getter.fetchLimit = newRateLimit(len(data) / 6)
	url := contentURL(getter, pub.Name.String())

	frame := filepath.Join(dir, "frame.png")
	t0 := time.Now()
	runTool(t, ctx, "ffmpeg", "-v", "error", "-y", "-ss", "20", "-i", url, "-frames:v", "1", frame)
	took := time.Since(t0)
	tr, running := transferOf(getter, pub.Name)
	if fi, err := os.Stat(frame); err != nil || fi.Size() == 0 {
		t.Fatalf("no frame decoded: %v", err)
	}
	if !running || tr.Held >= tr.Total {
		t.Fatalf("ffmpeg decoded its frame at 20 s in %v, but the download was over (running %v, %d of %d chunks)", took, running, tr.Held, tr.Total)
	}
	t.Logf("frame at 20 s decoded in %v, the download at %d of %d chunks", took, tr.Held, tr.Total)

	out := runTool(t, ctx, "ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", url)
	d, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
	if err != nil || d < 29.9 || d > 30.1 {
		t.Fatalf("ffprobe duration %q (%v), want 30 s", out, err)
	}
}

func fileSize(t *testing.T, path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}
