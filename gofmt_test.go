// Package veil_test holds checks that span the whole tree.
package veil_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestGofmt fails if any Go file in the module is not gofmt-ed.
func TestGofmt(t *testing.T) {
	gofmt, err := exec.LookPath("gofmt")
	if err != nil {
		t.Skip("gofmt not found on PATH; install the Go toolchain's gofmt")
	}
	out, err := exec.Command(gofmt, "-l", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("gofmt -l: %v\n%s", err, out)
	}
	if files := strings.TrimSpace(string(out)); files != "" {
		t.Fatalf("these files are not gofmt-ed (run gofmt -w):\n%s", files)
	}
}
