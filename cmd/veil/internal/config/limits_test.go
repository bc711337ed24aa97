package config

import (
	"errors"
	"strings"
	"testing"
)

func TestLimitsBadValuesNameKey(t *testing.T) {
	for _, tt := range []struct{ file, key string }{
		{"[limits]\nmax_queued = \"lots\"\n", "limits.max_queued"},
		{"[limits]\nmax_queued = \"1KiB\"\n", "limits.max_queued"},
		{"[limits]\nmax_links = 2\n", "limits.max_links"},
		{"[limits]\nmax_inbound_per_subnet = -1\n", "limits.max_inbound_per_subnet"},
		{"[limits]\nmax_handshakes = 0\n", "limits.max_handshakes"},
		{"[limits]\ncreate_rate = 0\n", "limits.create_rate"},
	} {
		_, err := Parse([]byte(tt.file))
		var ce *Error
		if !errors.As(err, &ce) || ce.Key != tt.key || !strings.Contains(err.Error(), tt.key) {
			t.Errorf("%q: %v, want an error naming %s", tt.file, err, tt.key)
		}
	}
	c, err := Parse([]byte("[limits]\nmax_queued = \"64MiB\"\nmax_inbound_per_subnet = 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := c.MaxQueued(); n != 64<<20 || c.Limits.MaxInboundPerSubnet != 0 {
		t.Fatalf("limits %+v", c.Limits)
	}
}
