package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// asVeil makes the test binary behave as the veil command when it runs as
// a child of testnet --procs (which starts os.Executable()).
const asVeil = "VEILTEST_AS_VEIL"

func TestMain(m *testing.M) {
	if os.Getenv(asVeil) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func TestTestnetProcs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes: skipped with -short")
	}
	t.Setenv(asVeil, "1")
	var out, errb bytes.Buffer
	code := run([]string{"testnet", "--procs", "-nodes", "5", "-size", "300001", "-dir", t.TempDir()}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out.String(), errb.String())
	}
	for _, want := range []string{"started 5 `veil node` processes", "veil put at node1", "get: done", "ok: sha256", "all 5 nodes stopped cleanly"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
