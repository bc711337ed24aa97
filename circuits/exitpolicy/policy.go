// Package exitpolicy decides which TCP destinations an exit opens
// connections to. Rules are Tor's exit policy lines, read top to bottom,
// the first that matches deciding:
//
//	accept|reject ADDR[/MASK]:PORT[-PORT]
//
// ADDR is "*" (any address), "*4" or "*6" (any IPv4 or IPv6 address), an
// IPv4 address, an IPv6 address in brackets, or "private" (every address
// of SpecialPrefixes). MASK is a prefix length or, for IPv4, a dotted mask
// ("255.255.0.0"). PORT is "*" or a number, a range "LO-HI". An address
// that no rule matches is refused.
//
// Before any rule, a Policy refuses private, loopback, link-local, CGNAT,
// multicast, reserved and unspecified destinations (IPv4-mapped and
// IPv4-embedding IPv6 forms included) unless AllowPrivate is set: an exit
// must not become a way into its own network. The exit checks every
// address a name resolves to, so a name cannot smuggle such a destination
// past it either.
//
// Pure: no I/O, no DNS.
package exitpolicy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"veil/proto"
)

// ErrSyntax is wrapped by every parse error.
var ErrSyntax = errors.New("exitpolicy: bad rule")

// MaxRuleLen bounds one rule's text; MaxRules bounds a policy.
const (
	MaxRuleLen = 128
	MaxRules   = 1024
)

// addrKind says what addresses a rule's address part matches.
type addrKind uint8

const (
	anyAddr     addrKind = iota // "*"
	anyV4                       // "*4"
	anyV6                       // "*6"
	prefixAddr                  // an address with a prefix length
	privateAddr                 // "private"
)

// Rule is one accept or reject line.
type Rule struct {
	Accept         bool
	kind           addrKind
	Prefix         netip.Prefix // when kind is prefixAddr
	PortLo, PortHi uint16
}

// ParseRule reads one rule such as "accept 127.0.0.1:8000-8999".
func ParseRule(s string) (Rule, error) {
	var r Rule
	if len(s) > MaxRuleLen {
		return r, fmt.Errorf("%w: %d bytes, at most %d", ErrSyntax, len(s), MaxRuleLen)
	}
	verb, rest, ok := strings.Cut(strings.TrimSpace(s), " ")
	if !ok {
		return r, fmt.Errorf("%w: %q: want accept|reject ADDR:PORT", ErrSyntax, s)
	}
	switch verb {
	case "accept":
		r.Accept = true
	case "reject":
	default:
		return r, fmt.Errorf("%w: %q: starts with %q, want accept or reject", ErrSyntax, s, verb)
	}
	rest = strings.TrimSpace(rest)
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return r, fmt.Errorf("%w: %q: no :PORT", ErrSyntax, s)
	}
	addr, ports := rest[:i], rest[i+1:]
	if err := r.parseAddr(addr); err != nil {
		return r, fmt.Errorf("%w: %q: %v", ErrSyntax, s, err)
	}
	if err := r.parsePorts(ports); err != nil {
		return r, fmt.Errorf("%w: %q: %v", ErrSyntax, s, err)
	}
	return r, nil
}

func (r *Rule) parseAddr(a string) error {
	switch a {
	case "*":
		r.kind = anyAddr
		return nil
	case "*4":
		r.kind = anyV4
		return nil
	case "*6":
		r.kind = anyV6
		return nil
	case "private":
		r.kind = privateAddr
		return nil
	}
	r.kind = prefixAddr
	ip, mask, hasMask := strings.Cut(a, "/")
	var addr netip.Addr
	if strings.HasPrefix(ip, "[") {
		if !strings.HasSuffix(ip, "]") {
			return fmt.Errorf("address %q: unclosed bracket", ip)
		}
		v, err := netip.ParseAddr(ip[1 : len(ip)-1])
		if err != nil || !v.Is6() || v.Zone() != "" {
			return fmt.Errorf("address %q: want an IPv6 address in brackets", ip)
		}
		addr = v
	} else {
		v, err := netip.ParseAddr(ip)
		if err != nil || !v.Is4() {
			return fmt.Errorf("address %q: want *, *4, *6, private, an IPv4 address or [IPv6]", ip)
		}
		addr = v
	}
	bits := addr.BitLen()
	if hasMask {
		n, err := strconv.Atoi(mask)
		switch {
		case err == nil && n >= 0 && n <= addr.BitLen() && mask == strconv.Itoa(n):
			bits = n
		case addr.Is4():
			m, err := netip.ParseAddr(mask)
			if err != nil || !m.Is4() {
				return fmt.Errorf("mask %q: want a prefix length or a dotted IPv4 mask", mask)
			}
			if bits = maskBits(m.As4()); bits < 0 {
				return fmt.Errorf("mask %q: not contiguous", mask)
			}
		default:
			return fmt.Errorf("mask %q: want a prefix length 0..%d", mask, addr.BitLen())
		}
	}
	p, err := addr.Prefix(bits)
	if err != nil {
		return err
	}
	r.Prefix = p
	return nil
}

// maskBits is the prefix length of a dotted mask, or -1 if it has holes.
func maskBits(m [4]byte) int {
	v := uint32(m[0])<<24 | uint32(m[1])<<16 | uint32(m[2])<<8 | uint32(m[3])
	n := 0
	for v&0x80000000 != 0 {
		n++
		v <<= 1
	}
	if v != 0 {
		return -1
	}
	return n
}

func (r *Rule) parsePorts(p string) error {
	if p == "*" {
		r.PortLo, r.PortHi = 1, 65535
		return nil
	}
	lo, hi, isRange := strings.Cut(p, "-")
	a, err := port(lo)
	if err != nil {
		return err
	}
	b := a
	if isRange {
		if b, err = port(hi); err != nil {
			return err
		}
	}
	if b < a {
		return fmt.Errorf("port range %q runs backwards", p)
	}
	r.PortLo, r.PortHi = a, b
	return nil
}

func port(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 || s != strconv.FormatUint(n, 10) {
		return 0, fmt.Errorf("port %q: want 1..65535 or *", s)
	}
	return uint16(n), nil
}

// Matches reports whether the rule covers ap (its address unmapped from
// IPv4-mapped IPv6 first).
func (r Rule) Matches(ap netip.AddrPort) bool {
	if ap.Port() < r.PortLo || ap.Port() > r.PortHi {
		return false
	}
	a := ap.Addr().Unmap()
	switch r.kind {
	case anyAddr:
		return true
	case anyV4:
		return a.Is4()
	case anyV6:
		return a.Is6()
	case privateAddr:
		return Special(a)
	}
	return r.Prefix.Contains(a)
}

// String is the rule in the form ParseRule reads.
func (r Rule) String() string {
	var b strings.Builder
	if r.Accept {
		b.WriteString("accept ")
	} else {
		b.WriteString("reject ")
	}
	switch r.kind {
	case anyAddr:
		b.WriteString("*")
	case anyV4:
		b.WriteString("*4")
	case anyV6:
		b.WriteString("*6")
	case privateAddr:
		b.WriteString("private")
	default:
		if r.Prefix.Addr().Is6() {
			b.WriteString("[" + r.Prefix.Addr().String() + "]")
		} else {
			b.WriteString(r.Prefix.Addr().String())
		}
		if r.Prefix.Bits() != r.Prefix.Addr().BitLen() {
			b.WriteString("/" + strconv.Itoa(r.Prefix.Bits()))
		}
	}
	b.WriteByte(':')
	switch {
	case r.PortLo == 1 && r.PortHi == 65535:
		b.WriteString("*")
	case r.PortLo == r.PortHi:
		b.WriteString(strconv.Itoa(int(r.PortLo)))
	default:
		b.WriteString(strconv.Itoa(int(r.PortLo)) + "-" + strconv.Itoa(int(r.PortHi)))
	}
	return b.String()
}

// Policy is an exit's whole policy. The zero value refuses everything.
type Policy struct {
	Rules []Rule
	// AllowPrivate lets the rules decide about the SpecialPrefixes too
	// (for test networks on one machine); otherwise they are refused
	// first.
	AllowPrivate bool
}

// Parse reads a policy from its lines (one rule each; blank lines and
// those starting with # are skipped).
func Parse(lines []string, allowPrivate bool) (Policy, error) {
	p := Policy{AllowPrivate: allowPrivate}
	for i, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if len(p.Rules) == MaxRules {
			return p, fmt.Errorf("%w: more than %d rules", ErrSyntax, MaxRules)
		}
		r, err := ParseRule(l)
		if err != nil {
			return p, fmt.Errorf("line %d: %w", i+1, err)
		}
		p.Rules = append(p.Rules, r)
	}
	return p, nil
}

// Allows reports whether an exit under p opens a connection to ap.
func (p Policy) Allows(ap netip.AddrPort) bool {
	a := ap.Addr().Unmap()
	if !a.IsValid() || ap.Port() == 0 || a.Zone() != "" {
		return false
	}
	if !p.AllowPrivate && Special(a) {
		return false
	}
	for _, r := range p.Rules {
		if r.Matches(ap) {
			return r.Accept
		}
	}
	return false
}

// AcceptsPort reports whether some address could be accepted on port:
// what a client can know of an exit without knowing the address.
func (p Policy) AcceptsPort(port uint16) bool { return p.acceptsPort(port) }

// SpecialPrefixes are the destinations an exit refuses unless
// AllowPrivate: "this network", private (RFC 1918, RFC 4193), loopback,
// link-local, CGNAT (RFC 6598), IETF protocol assignments, documentation,
// benchmarking, multicast, reserved and broadcast ranges, for IPv4 and
// IPv6 (IPv6 site-local, discard-only and the old IPv4-compatible range
// included).
var SpecialPrefixes = mustPrefixes(
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
	"172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16",
	"198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
	"::/96", "::1/128", "100::/64", "2001:db8::/32", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
)

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// Special reports whether a is in SpecialPrefixes, directly, as an
// IPv4-mapped address, or as the IPv4 address a 6to4 (2002::/16) or
// NAT64 (64:ff9b::/96) address carries.
func Special(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() {
		return true
	}
	for _, p := range SpecialPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	if a.Is6() {
		b := a.As16()
		var v4 netip.Addr
		switch {
		case b[0] == 0x20 && b[1] == 0x02: // 6to4: 2002:V4ADDR::/48
			v4 = netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})
		case netip.MustParsePrefix("64:ff9b::/96").Contains(a):
			v4 = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
		}
		if v4.IsValid() {
			return Special(v4)
		}
	}
	return false
}

// PortSummary lists the ports on which p accepts some address, as
// ascending, disjoint, non-adjacent ranges (what an exit's descriptor
// carries). Beyond max ranges, the closest ones are merged: the summary
// may then claim ports the policy refuses (a client that tries is told
// so), never the other way round. An accept rule that names only
// addresses p refuses anyway (special ones, without AllowPrivate) claims
// nothing.
func (p Policy) PortSummary(max int) []proto.PortRange {
	// Only rule boundaries change the answer: test one port per segment.
	cuts := []int{1, 65536}
	for _, r := range p.Rules {
		cuts = append(cuts, int(r.PortLo), int(r.PortHi)+1)
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	var out []proto.PortRange
	for i := 0; i+1 < len(cuts); i++ {
		lo, hi := cuts[i], cuts[i+1]-1
		if !p.acceptsPort(uint16(lo)) {
			continue
		}
		if n := len(out); n > 0 && int(out[n-1].Hi)+1 == lo {
			out[n-1].Hi = uint16(hi)
		} else {
			out = append(out, proto.PortRange{Lo: uint16(lo), Hi: uint16(hi)})
		}
	}
	for max > 0 && len(out) > max {
		best := 1
		for i := 2; i < len(out); i++ {
			if out[i].Lo-out[i-1].Hi < out[best].Lo-out[best-1].Hi {
				best = i
			}
		}
		out[best-1].Hi = out[best].Hi
		out = slices.Delete(out, best, best+1)
	}
	return out
}

// acceptsPort is AcceptsPort ignoring accept rules whose addresses p
// refuses before any rule.
func (p Policy) acceptsPort(port uint16) bool {
	for _, r := range p.Rules {
		if port < r.PortLo || port > r.PortHi {
			continue
		}
		if r.Accept {
			if !p.AllowPrivate && r.onlySpecial() {
				continue
			}
			return true
		}
		if r.kind == anyAddr {
			return false
		}
	}
	return false
}

// onlySpecial reports whether every address the rule names is special.
func (r Rule) onlySpecial() bool {
	switch r.kind {
	case privateAddr:
		return true
	case prefixAddr:
		for _, sp := range SpecialPrefixes {
			if sp.Bits() <= r.Prefix.Bits() && sp.Contains(r.Prefix.Addr()) {
				return true
			}
		}
	}
	return false
}
