package config

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestDefaultFileRoundTrips(t *testing.T) {
	c, err := Parse([]byte(DefaultFile))
	if err != nil {
		t.Fatal(err)
	}
	if want := Default(); !reflect.DeepEqual(c, want) {
		t.Fatalf("default file gives\n%+v\nwant\n%+v", c, want)
	}
	// Every key is in the file, with a comment line just above it or
	// above its group.
	for _, k := range Keys() {
		name := k[strings.LastIndex(k, ".")+1:]
		if !strings.Contains(DefaultFile, "\n"+name+" = ") {
			t.Errorf("key %s is not in the default file", k)
		}
	}
}

func TestBadValueNamesKey(t *testing.T) {
	tests := []struct {
		file, key, value, allowed string
	}{
		{"[tunnels]\nmin_circuits = 0\n", "tunnels.min_circuits", "0", "1..64"},
		{"[tunnels]\nmax_circuits = 2\n", "tunnels.max_circuits", "2", "min_circuits (4)..64"},
		{"[tunnels]\nmax_time = \"soon\"\n", "tunnels.max_time", "soon", "duration"},
		{"[tunnels]\nmax_traffic = \"lots\"\n", "tunnels.max_traffic", "lots", "size"},
		{"relay_bandwidth_rate = \"fast\"\n", "relay_bandwidth_rate", "fast", "64KiB to 1GiB"},
		{"relay_bandwidth_rate = \"1kB\"\n", "relay_bandwidth_rate", "1kB", "64KiB to 1GiB"},
		{"relay_bandwidth_rate = \"2GiB\"\n", "relay_bandwidth_rate", "2GiB", "64KiB to 1GiB"},
		{"relay_bandwidth_burst = \"1B\"\n", "relay_bandwidth_burst", "1B", "64KiB to 1GiB"},
		{"[facilitator]\npeers = [\"seeds.example:6881\"]\n", "facilitator.peers", "seeds.example:6881", "host names"},
		{"[facilitator]\nknown = [\"x\"]\n", "facilitator.known", "x", "ID@IP:PORT"},
		{"[facilitator]\ncapacity = \"1KiB\"\n", "facilitator.capacity", "1KiB", "1MiB"},
		{"listen = \"nowhere\"\n", "listen", "nowhere", "IP:PORT"},
		{"http = \"0.0.0.0:7780\"\n", "http", "0.0.0.0:7780", "loopback"},
		{"log_level = \"loud\"\n", "log_level", "loud", "debug"},
		{"bridges = [\"1.2.3.4:7700\"]\n", "bridges", "1.2.3.4:7700", "ID@IP:PORT"},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.file))
		var ce *Error
		if !errors.As(err, &ce) {
			t.Errorf("%q: err %v, want a *Error", tt.file, err)
			continue
		}
		if ce.Key != tt.key || ce.Value != tt.value || !strings.Contains(ce.Allowed, tt.allowed) {
			t.Errorf("%q: got %+v", tt.file, ce)
		}
		if !strings.Contains(err.Error(), tt.key) {
			t.Errorf("%q: message %q does not name %s", tt.file, err, tt.key)
		}
	}
	// A value of the wrong TOML type names its key too.
	if _, err := Parse([]byte("[tunnels]\nmin_circuits = \"four\"\n")); err == nil || !strings.Contains(err.Error(), "min_circuits") {
		t.Errorf("wrong type: %v", err)
	}
}

func TestUnknownKeyRejected(t *testing.T) {
	for _, f := range []string{"lisen = \"0.0.0.0:1\"\n", "[tunnels]\nmin_circuit = 3\n", "[nosuch]\nx = 1\n"} {
		_, err := Parse([]byte(f))
		if !errors.Is(err, ErrUnknownKey) {
			t.Errorf("%q: err %v, want ErrUnknownKey", f, err)
		}
	}
	var c Config
	if err := c.Set("tunnels.nope", "1"); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("Set of an unknown key: %v", err)
	}
}

func TestEnvOverridesFile(t *testing.T) {
	c, err := Parse([]byte("listen = \"127.0.0.1:1\"\n[tunnels]\nmin_circuits = 2\n[roles]\nexit = false\n"))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"VEIL_LISTEN":               "127.0.0.1:2",
		"VEIL_TUNNELS_MIN_CIRCUITS": "3",
		"VEIL_ROLES_EXIT":           "true",
		"VEIL_BRIDGES":              "a, b",
	}
	if err := c.ApplyEnv(func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:2" || c.Tunnels.MinCircuits != 3 || !c.Roles.Exit || !reflect.DeepEqual(c.Bridges, []string{"a", "b"}) {
		t.Fatalf("env not applied: %+v", c)
	}
	err = c.ApplyEnv(func(k string) string {
		if k == "VEIL_ROLES_RELAY" {
			return "maybe"
		}
		return ""
	})
	if err == nil || !strings.Contains(err.Error(), "VEIL_ROLES_RELAY") || !strings.Contains(err.Error(), "true or false") {
		t.Fatalf("bad env value: %v", err)
	}
}

func TestParseBridge(t *testing.T) {
	id := strings.Repeat("ab", 20)
	b, err := ParseBridge(id + "@127.0.0.1:7700")
	if err != nil || b.Addr.Port() != 7700 || b.String() != id+"@127.0.0.1:7700" {
		t.Fatalf("%v %v", b, err)
	}
	for _, s := range []string{"127.0.0.1:7700", id + "@nowhere", "abc@127.0.0.1:1"} {
		if _, err := ParseBridge(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestParseSize(t *testing.T) {
	for s, want := range map[string]uint64{"250MiB": 250 << 20, "1GiB": 1 << 30, "1000": 1000, "2 kB": 2000} {
		if got, err := ParseSize(s); err != nil || got != want {
			t.Errorf("%q: %d %v", s, got, err)
		}
	}
	for _, s := range []string{"", "MiB", "-1", "1TiB", "99999999999999999999GiB"} {
		if _, err := ParseSize(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestFlagsOverrideFileAndEnv(t *testing.T) {
	path := t.TempDir() + "/veil.toml"
	if err := os.WriteFile(path, []byte("listen = \"127.0.0.1:1\"\nlog_level = \"error\"\n[tunnels]\nmax_circuits = 9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"VEIL_LISTEN": "127.0.0.1:2", "VEIL_LOG_LEVEL": "info"}
	c, err := Resolve(path, true, func(k string) string { return env[k] }, []Override{{"listen", "127.0.0.1:3"}, {"tunnels.max_circuits", "10"}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:3" || c.Tunnels.MaxCircuits != 10 || c.LogLevel != "info" {
		t.Fatalf("got listen %s max_circuits %d log_level %s", c.Listen, c.Tunnels.MaxCircuits, c.LogLevel)
	}
	// A bad override is named; a missing explicit file is an error, a
	// missing default one is not.
	if _, err := Resolve(path, true, os.Getenv, []Override{{"tunnels.hops", "0"}}); err == nil || !strings.Contains(err.Error(), "tunnels.hops") {
		t.Fatalf("bad override: %v", err)
	}
	if _, err := Resolve(path+".missing", true, os.Getenv, nil); err == nil {
		t.Fatal("missing explicit file accepted")
	}
	if _, err := Resolve(path+".missing", false, func(string) string { return "" }, nil); err != nil {
		t.Fatal(err)
	}
}

func TestSOCKSAndExitKeys(t *testing.T) {
	for _, tc := range []struct{ file, key string }{
		{`socks = "0.0.0.0:7750"`, "socks"},
		{`socks = "7750"`, "socks"},
		{"[exit]\npolicy = [\"accept *:80\", \"allow *:*\"]", "exit.policy"},
		{"[exit]\npolicy = [\"accept 10.0.0.0/33:80\"]", "exit.policy"},
	} {
		_, err := Parse([]byte(tc.file))
		var ce *Error
		if !errors.As(err, &ce) || ce.Key != tc.key {
			t.Errorf("%q: %v, want an error naming %s", tc.file, err, tc.key)
		}
	}
	c, err := Parse([]byte("socks = \"\"\n[exit]\npolicy = [\"accept 127.0.0.1:8000-9000\"]\nallow_private = true\n"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.ExitPolicy()
	if err != nil || !p.AllowPrivate || len(p.Rules) != 1 || c.SOCKS != "" {
		t.Fatalf("%+v %v", p, err)
	}
	if _, err := Parse([]byte("[exit]\nbogus = 1\n")); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("unknown key under [exit]: %v", err)
	}
}
