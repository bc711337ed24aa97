package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"veil/cmd/veil/internal/config"
	"veil/cmd/veil/internal/control"
	"veil/cmd/veil/internal/node"
)

// veil status reads a running node's status through its control port;
// when that port does not answer, it says so and asks the local API.
func TestStatusThroughControlPort(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	c := config.Default()
	c.Listen, c.HTTP, c.DataDir, c.AllowPrivate = "127.0.0.1:0", "127.0.0.1:0", dir, true
	c.Control.Listen, c.SOCKS = "127.0.0.1:0", ""
	n, err := node.Start(node.Options{Config: c})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n.Run(ctx)

	code, out, errs := runArgs("status", "--data-dir", dir)
	if code != 0 || !strings.Contains(out, "node       "+n.ID().String()) || errs != "" {
		t.Fatalf("status: exit %d\n%s\nstderr: %s", code, out, errs)
	}
	code, out, errs = runArgs("status", "--data-dir", dir, "--json")
	if code != 0 || !strings.Contains(out, `"id": "`+n.ID().String()) {
		t.Fatalf("status --json: exit %d\n%s\nstderr: %s", code, out, errs)
	}

	// A control port that does not answer: the API answers instead, and
	// status says why.
	if err := os.WriteFile(filepath.Join(dir, control.AddrFile), []byte("127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs = runArgs("status", "--data-dir", dir)
	if code != 0 || !strings.Contains(out, "node       "+n.ID().String()) || !strings.Contains(errs, "control port at 127.0.0.1:1") || !strings.Contains(errs, "local API instead") {
		t.Fatalf("status with a dead control port: exit %d\n%s\nstderr: %s", code, out, errs)
	}
}
