package main

import (
	"strings"
	"testing"
)

// Bad magnet links and infohashes are refused before any node is looked
// for, with exit code 2 and a message naming what is wrong.
func TestGetBadMagnets(t *testing.T) {
	isolate(t)
	for _, tc := range []struct{ args []string }{
		{[]string{"magnet:?xt=urn:btih:abcd"}},                                                 // wrong length
		{[]string{"magnet:?xt=urn:btih:" + strings.Repeat("zz", 20)}},                          // bad hex
		{[]string{"magnet:?xt=urn:btih:" + strings.Repeat("1", 32)}},                           // bad base32
		{[]string{"magnet:?dn=nothing"}},                                                       // no infohash
		{[]string{strings.Repeat("1", 32)}},                                                    // bare base32, bad
		{[]string{"--torrent", strings.Repeat("ab", 19)}},                                      // bare hex, short
		{[]string{"--torrent", strings.Repeat("xy", 20)}},                                      // bare hex, bad
		{[]string{"magnet:?xt=urn:btih:" + strings.Repeat("ab", 20) + "&x.pe=host.example:1"}}, // host name peer
	} {
		code, _, errs := runArgs(append([]string{"get"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(errs, "facilitator: bad") {
			t.Errorf("get %v: exit %d: %s", tc.args, code, errs)
		}
	}
	// A good magnet with no node and no bridge: told how to start one.
	code, _, errs := runArgs("get", "magnet:?xt=urn:btih:"+strings.Repeat("ab", 20))
	if code != exitNoNode || !strings.Contains(errs, "--bridge") {
		t.Errorf("good magnet without a node: exit %d: %s", code, errs)
	}
}
