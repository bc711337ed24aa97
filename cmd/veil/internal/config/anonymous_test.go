package config

import (
	"errors"
	"strings"
	"testing"
)

// anonymous = true refuses each setting that would reveal the user, naming
// its key and value; a client-only configuration passes.
func TestAnonymousRefusesRevealingSettings(t *testing.T) {
	const client = "anonymous = true\nlisten = \"\"\n[roles]\nrelay = false\nordb = false\n"
	if _, err := Parse([]byte(client)); err != nil {
		t.Fatalf("client-only anonymous configuration refused: %v", err)
	}
	// Without anonymous, the same settings are fine.
	if _, err := Parse([]byte("[roles]\nexit = true\nfacilitator = true\n[tunnels]\nhops = 1\n")); err != nil {
		t.Fatalf("not anonymous: %v", err)
	}
	for _, tt := range []struct{ file, key, value string }{
		{"anonymous = true\n", "roles.relay", "true"}, // the defaults are a relay and ORDB
		{client + "exit = true\n", "roles.exit", "true"},
		{client + "facilitator = true\n", "roles.facilitator", "true"},
		{client + "bridge = true\n", "roles.bridge", "true"},
		{"anonymous = true\nlisten = \"\"\n[roles]\nrelay = false\n", "roles.ordb", "true"},
		{"anonymous = true\n[roles]\nrelay = false\nordb = false\n", "listen", DefaultListenAddr},
		{client + "[tunnels]\nhops = 2\n", "tunnels.hops", "2"},
		{client + "[tunnels]\nhops = 1\n", "tunnels.hops", "1"},
	} {
		_, err := Parse([]byte(tt.file))
		var ce *Error
		if !errors.As(err, &ce) || ce.Key != tt.key || ce.Value != tt.value || !strings.Contains(ce.Allowed, "anonymous") {
			t.Errorf("%q: %v, want key %s value %s", tt.file, err, tt.key, tt.value)
			continue
		}
		if !strings.Contains(err.Error(), tt.key) {
			t.Errorf("%q: message %q does not name %s", tt.file, err, tt.key)
		}
	}
	// The same through environment variables and flags.
	c, err := Resolve("/nonexistent/veil.toml", false, func(k string) string {
		if k == "VEIL_ANONYMOUS" {
			return "true"
		}
		return ""
	}, []Override{{"roles.relay", "false"}, {"roles.ordb", "false"}, {"listen", ""}, {"tunnels.hops", "1"}})
	if ce := (*Error)(nil); !errors.As(err, &ce) || ce.Key != "tunnels.hops" {
		t.Fatalf("resolve: %+v %v", c, err)
	}
}

func TestPseudonymKey(t *testing.T) {
	for _, ok := range []string{"", "alice", "A-b_9"} {
		if _, err := Parse([]byte("pseudonym = \"" + ok + "\"\n")); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"../identity", "a b", "x/y", strings.Repeat("a", 65), "identity.key"} {
		_, err := Parse([]byte("pseudonym = \"" + bad + "\"\n"))
		var ce *Error
		if !errors.As(err, &ce) || ce.Key != "pseudonym" {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
