package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// isolate points the XDG directories at a temporary one.
func isolate(t *testing.T) string {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "VEIL_") {
			t.Setenv(k, "")
		}
	}
	return dir
}

func runArgs(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestConfigDefaultIsAcceptedByCheck(t *testing.T) {
	dir := isolate(t)
	code, out, _ := runArgs("config", "default")
	if code != 0 {
		t.Fatal(code)
	}
	path := filepath.Join(dir, "veil.toml")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := runArgs("config", "check", path); code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("check of the default file: %d %s %s", code, out, errs)
	}
	bad := strings.Replace(out, "min_circuits = 4", "min_circuits = 0", 1)
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runArgs("config", "check", path)
	if code != exitUsage || !strings.Contains(errs, "tunnels.min_circuits") || !strings.Contains(errs, `"0"`) || !strings.Contains(errs, "1..64") {
		t.Fatalf("bad file: exit %d, %s", code, errs)
	}
	if code, _, errs := runArgs("config", "check", path+".missing"); code == 0 {
		t.Fatalf("missing file accepted: %s", errs)
	}
}

func TestGetWithoutNodeOrBridge(t *testing.T) {
	isolate(t)
	code, _, errs := runArgs("get", strings.Repeat("ab", 20))
	if code != exitNoNode || !strings.Contains(errs, "--bridge") || !strings.Contains(errs, "bridges") {
		t.Fatalf("exit %d: %s", code, errs)
	}
	code, _, errs = runArgs("put", "nodecmds_test.go")
	if code != exitNoNode || !strings.Contains(errs, "veil node") {
		t.Fatalf("put without node: exit %d: %s", code, errs)
	}
	code, _, errs = runArgs("status")
	if code != exitNoNode {
		t.Fatalf("status without node: exit %d: %s", code, errs)
	}
	// A bad flag value names its key.
	code, _, errs = runArgs("get", "--set", "tunnels.hops=99", strings.Repeat("ab", 20))
	if code != exitUsage || !strings.Contains(errs, "tunnels.hops") {
		t.Fatalf("bad --set: exit %d: %s", code, errs)
	}
}

// Bad arguments of get and put are refused before any node is looked
// for, naming what is wrong, with exit code 2.
func TestGetPutBadArguments(t *testing.T) {
	dir := isolate(t)
	for _, bad := range []string{"xyz", strings.Repeat("zz", 20), strings.Repeat("ab", 21)} {
		code, _, errs := runArgs("get", bad)
		if code != exitUsage || !strings.Contains(errs, "is not a hash_name") || !strings.Contains(errs, "40 hex digits") || strings.Contains(errs, "node ID") {
			t.Errorf("get %s: exit %d: %s", bad, code, errs)
		}
	}
	missing := filepath.Join(dir, "missing")
	code, _, errs := runArgs("put", missing)
	if code != exitUsage || !strings.Contains(errs, missing) || !strings.Contains(errs, "no such file") {
		t.Errorf("put of a missing file: exit %d: %s", code, errs)
	}
	code, _, errs = runArgs("put", dir)
	if code != exitUsage || !strings.Contains(errs, "not a regular file") {
		t.Errorf("put of a directory: exit %d: %s", code, errs)
	}
}

// The CLI applies the file, then VEIL_* variables, then flags.
func TestCLIOverrides(t *testing.T) {
	dir := isolate(t)
	path := filepath.Join(dir, "veil.toml")
	if err := os.WriteFile(path, []byte("[tunnels]\nhops = 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := runArgs("status", "--config", path); code != exitUsage || !strings.Contains(errs, "tunnels.hops") {
		t.Fatalf("bad file: exit %d: %s", code, errs)
	}
	// A flag repairs the file's bad value: the command gets as far as
	// looking for a node.
	if code, _, errs := runArgs("status", "--config", path, "--set", "tunnels.hops=3"); code != exitNoNode {
		t.Fatalf("flag over file: exit %d: %s", code, errs)
	}
	t.Setenv("VEIL_TUNNELS_HOPS", "3")
	if code, _, errs := runArgs("status", "--config", path); code != exitNoNode {
		t.Fatalf("env over file: exit %d: %s", code, errs)
	}
	// ... and the flag wins over the variable.
	if code, _, errs := runArgs("status", "--config", path, "--set", "tunnels.hops=0"); code != exitUsage {
		t.Fatalf("flag over env: exit %d: %s", code, errs)
	}
	// --bridge is repeatable; each value is checked.
	id := strings.Repeat("ab", 20)
	code, _, errs := runArgs("status", "--bridge", id+"@127.0.0.1:1", "--bridge", "nonsense")
	if code != exitUsage || !strings.Contains(errs, `"nonsense"`) {
		t.Fatalf("second --bridge: exit %d: %s", code, errs)
	}
}
