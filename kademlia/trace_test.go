package kademlia

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"veil/proto"
)

var update = flag.Bool("update", false, "rewrite the golden traces under testdata")

// TestSimGoldenTrace runs a small network through join, STORE and
// FIND_VALUE with loss and a node gone, and compares every message with
// testdata/sim16.trace, so a change of behaviour shows as a reviewable
// diff. Regenerate with: go test ./kademlia -run TestSimGoldenTrace -update
func TestSimGoldenTrace(t *testing.T) {
	cfg := DefaultSimConfig(16, 42)
	cfg.Loss = 0.05
	s, err := NewSim(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var trace bytes.Buffer
	s.Trace = &trace
	if err := s.Build(); err != nil {
		t.Fatal(err)
	}
	key := proto.HashName{0x42}
	trace.WriteString("# provide from node 3\n")
	if r, err := s.Provide(3, key); err != nil || r.Stored == 0 {
		t.Fatalf("provide: %v %d", err, r.Stored)
	}
	s.SetAlive(5, false)
	trace.WriteString("# node 5 gone; find_value from node 9\n")
	r, err := s.FindValue(9, key)
	if err != nil || len(r.Records) == 0 {
		t.Fatalf("find_value: %v %d records", err, len(r.Records))
	}
	golden := filepath.Join("testdata", "sim16.trace")
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
		got := filepath.Join(t.TempDir(), "sim16.trace")
		os.WriteFile(got, trace.Bytes(), 0o644)
		t.Fatalf("trace differs from %s; got %s (diff them; -update if intended)", golden, got)
	}
}
