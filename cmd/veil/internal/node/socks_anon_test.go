package node

import (
	"bytes"
	"context"
	"testing"
	"time"

	"veil/cmd/veil/internal/config"
	"veil/proto"
)

// An anonymous node's SOCKS port works: its exit circuits' first hops are
// relays of its directory, which its dial guard lets through (the guard
// would refuse a first hop it could not vouch for).
func TestSOCKSAnonymous(t *testing.T) {
	needCurl(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	en := newExitNet(t, ctx, 100_003)
	c := testConfig(t, t.TempDir(), en.nodes[0].BridgeLine())
	c.Roles, c.Listen, c.Anonymous = config.Roles{}, "", true
	anon := startTest(t, ctx, c)
	waitFor(t, 30*time.Second, "the anonymous node to know an exit", func() bool {
		for _, d := range anon.dir.Nodes() {
			if d.Flags&proto.FlagExit != 0 {
				return true
			}
		}
		return false
	})
	got, stderr, code := runCurl(t, "--socks5-hostname", anon.SOCKSAddr(), "http://127.0.0.1:"+en.port+"/file")
	if code != 0 || !bytes.Equal(got, en.file) {
		t.Fatalf("through the anonymous node's SOCKS port: exit %d, %d bytes: %s", code, len(got), stderr)
	}
}
