package window

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden traces under testdata")

// TestGoldenTrace runs a 1 MB download on six circuits, one of which dies
// and one of which stalls, and compares every action with
// testdata/six.trace, so a change of behaviour shows as a reviewable diff.
// Regenerate with: go test ./window -run TestGoldenTrace -update
func TestGoldenTrace(t *testing.T) {
	cfg, _ := scenario("equal", 1e6, 42)
	cfg.Circuits = append(cfg.Circuits, simBase)
	cfg.Circuits[0].FailAt = 250 * time.Millisecond
	cfg.Circuits[4].StallAt = 300 * time.Millisecond
	cfg.Circuits[2].RTT = 40 * time.Millisecond
	var trace bytes.Buffer
	fmt.Fprintf(&trace, "# 1 MB (%d chunks), six 2 MB/s circuits: c1 dies at 250 ms, c5 stalls at 300 ms, c3 has a 40 ms round trip\n", (cfg.Size+ChunkSize-1)/ChunkSize)
	cfg.Log = &trace
	s := newSim(cfg)
	s.run()
	checkRun(t, s)
	golden := filepath.Join("testdata", "six.trace")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, trace.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(trace.Bytes(), want) {
		got := filepath.Join(t.TempDir(), "six.trace")
		os.WriteFile(got, trace.Bytes(), 0o644)
		t.Fatalf("trace differs from %s; got %s (diff them; -update if intended)", golden, got)
	}
}
