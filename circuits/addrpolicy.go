package circuits

import "net/netip"

// nonGlobal lists the IPv4 and IPv6 ranges an EXTEND2 may not name unless
// the operator allows private addresses (SwitchConfig.AllowPrivateExtend):
// a relay that dialed them would let anyone scan its owner's network and
// read the answer from how fast TRUNCATED comes back.
var nonGlobal = func() []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8",       // "this network"
		"10.0.0.0/8",      // private
		"100.64.0.0/10",   // carrier-grade NAT
		"127.0.0.0/8",     // loopback
		"169.254.0.0/16",  // link-local
		"172.16.0.0/12",   // private
		"192.0.0.0/24",    // protocol assignments
		"192.0.2.0/24",    // documentation
		"192.168.0.0/16",  // private
		"198.18.0.0/15",   // benchmarking
		"198.51.100.0/24", // documentation
		"203.0.113.0/24",  // documentation
		"224.0.0.0/4",     // multicast
		"240.0.0.0/4",     // reserved, broadcast
		"::/96",           // unspecified, loopback and the old IPv4-compatible form
		"64:ff9b::/96",    // NAT64: an IPv4 address in disguise
		"64:ff9b:1::/48",  // local NAT64
		"100::/64",        // discard
		"2001:db8::/32",   // documentation
		"fc00::/7",        // unique local
		"fe80::/10",       // link-local
		"fec0::/10",       // old site-local
		"ff00::/8",        // multicast
	} {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}()

// GlobalAddr reports whether a is a globally routable unicast address, one
// a relay may dial for an EXTEND2 by default. IPv4-mapped IPv6 addresses
// (::ffff:a.b.c.d) are judged by their IPv4 address, and 6to4 addresses
// (2002::/16) by the IPv4 address they embed.
func GlobalAddr(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	a = a.Unmap()
	if a.Is6() && a.Zone() != "" {
		return false // a zone names a local interface
	}
	if a.Is6() {
		b := a.As16()
		if b[0] == 0x20 && b[1] == 0x02 { // 6to4: 2002:AABB:CCDD::/48 carries A.B.C.D
			if !GlobalAddr(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})) {
				return false
			}
		}
	}
	for _, p := range nonGlobal {
		if p.Contains(a) {
			return false
		}
	}
	return true
}
