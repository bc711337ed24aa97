package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `veil config check` and `veil node` refuse a file with anonymous = true
// and a setting that would reveal the user, naming the key and value.
func TestAnonymousConfigRefused(t *testing.T) {
	dir := isolate(t)
	path := filepath.Join(dir, "veil.toml")
	for _, tt := range []struct{ file, key, value string }{
		{"anonymous = true\nlisten = \"\"\n[roles]\nrelay = false\nordb = false\nexit = true\n", "roles.exit", `"true"`},
		{"anonymous = true\nlisten = \"\"\n[roles]\nrelay = false\nordb = false\nfacilitator = true\n", "roles.facilitator", `"true"`},
		{"anonymous = true\n", "roles.relay", `"true"`},
		{"anonymous = true\nlisten = \"\"\n[roles]\nrelay = false\nordb = false\n[tunnels]\nhops = 1\n", "tunnels.hops", `"1"`},
	} {
		if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{{"config", "check", path}, {"node", "--config", path}} {
			code, _, errs := runArgs(args...)
			if code != exitUsage || !strings.Contains(errs, tt.key) || !strings.Contains(errs, tt.value) || !strings.Contains(errs, "anonymous") {
				t.Errorf("%s with %q: exit %d: %s", args[0], tt.file, code, errs)
			}
		}
	}
	// The client-only anonymous file passes.
	if err := os.WriteFile(path, []byte("anonymous = true\nlisten = \"\"\n[roles]\nrelay = false\nordb = false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := runArgs("config", "check", path); code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("client-only anonymous file: %d %s %s", code, out, errs)
	}
	// veil get's own client is anonymous by default: it refuses 2 hops.
	code, _, errs := runArgs("get", "--bridge", strings.Repeat("ab", 20)+"@127.0.0.1:1", "--set", "tunnels.hops=2", strings.Repeat("ab", 20))
	if code != exitUsage || !strings.Contains(errs, "tunnels.hops") || !strings.Contains(errs, "anonymous") {
		t.Fatalf("get with 2 hops: exit %d: %s", code, errs)
	}
}
