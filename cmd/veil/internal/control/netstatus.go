package control

import (
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"veil/proto"
)

// Relay is a node the node knows (its directory), for GETINFO ns/*:
// controllers show circuit hops by the router status entries of Tor's
// consensus, which veil does not have; it writes one per known node.
type Relay struct {
	ID        proto.NodeID
	Addr      netip.AddrPort
	Flags     uint8     // proto.Flag*
	Published time.Time // the descriptor's ValidAfter
}

// routerStatus writes r as a v3 router status entry ("r" and "s" lines).
// Tor's entries name IPv4 addresses only: a node without one has none.
func routerStatus(r Relay) (string, bool) {
	if !r.Addr.Addr().Unmap().Is4() {
		return "", false
	}
	b64 := func(b []byte) string { return strings.TrimRight(base64.StdEncoding.EncodeToString(b), "=") }
	// No server descriptor exists: the digest names the node ID's hash.
	digest := sha1.Sum(r.ID[:])
	flags := []string{"Running", "Valid"}
	if r.Flags&proto.FlagExit != 0 {
		flags = append([]string{"Exit"}, flags...)
	}
	return fmt.Sprintf("r %s %s %s %s %s %d 0\ns %s\n", Nickname(r.ID), b64(r.ID[:]), b64(digest[:]),
		r.Published.UTC().Format("2006-01-02 15:04:05"), r.Addr.Addr().Unmap(), r.Addr.Port(), strings.Join(flags, " ")), true
}

// networkStatus answers ns/all, ns/id/FINGERPRINT and ns/name/NICKNAME.
func (s *Server) networkStatus(key string) (string, bool, error) {
	rs := s.cfg.Backend.Relays()
	var match func(Relay) bool
	switch {
	case key == "ns/all":
		match = func(Relay) bool { return true }
	case strings.HasPrefix(key, "ns/id/"):
		fp := strings.TrimPrefix(strings.TrimPrefix(key, "ns/id/"), "$")
		match = func(r Relay) bool { return strings.EqualFold(Fingerprint(r.ID), fp) }
	case strings.HasPrefix(key, "ns/name/"):
		nick := strings.TrimPrefix(key, "ns/name/")
		match = func(r Relay) bool { return strings.EqualFold(Nickname(r.ID), nick) }
	default:
		return "", false, nil
	}
	var b strings.Builder
	found := false
	for _, r := range rs {
		if !match(r) {
			continue
		}
		if e, ok := routerStatus(r); ok {
			b.WriteString(e)
			found = true
		}
	}
	if !found && key != "ns/all" {
		return "", false, nil // Tor's answer for a relay it does not know: 552
	}
	return b.String(), true, nil
}
