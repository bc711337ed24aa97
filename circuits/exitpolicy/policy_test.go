package exitpolicy

import (
	"net/netip"
	"slices"
	"testing"

	"veil/proto"
)

func TestParseRuleRoundTrip(t *testing.T) {
	for _, tc := range []struct{ in, out string }{
		{"accept *:*", "accept *:*"},
		{"reject *4:25", "reject *4:25"},
		{"accept *6:80-443", "accept *6:80-443"},
		{"accept 127.0.0.1:8000-8999", "accept 127.0.0.1:8000-8999"},
		{"reject 10.0.0.0/8:*", "reject 10.0.0.0/8:*"},
		{"reject 192.168.1.7/255.255.0.0:1-65535", "reject 192.168.0.0/16:*"},
		{"accept [::1]:80", "accept [::1]:80"},
		{"accept [2001:db8::]/32:443", "accept [2001:db8::]/32:443"},
		{"reject private:*", "reject private:*"},
		{"  accept   1.2.3.4:5 ", "accept 1.2.3.4:5"},
	} {
		r, err := ParseRule(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if got := r.String(); got != tc.out {
			t.Errorf("%q: String %q, want %q", tc.in, got, tc.out)
		}
	}
}

func TestParseRuleErrors(t *testing.T) {
	for _, in := range []string{
		"", "accept", "allow *:*", "accept *", "accept *:0", "accept *:65536", "accept *:80-20",
		"accept 1.2.3.4/33:80", "accept 1.2.3.4/255.0.255.0:80", "accept ::1:80", "accept [1.2.3.4]:80",
		"accept [::1:80", "accept [fe80::1%eth0]:80", "accept host.example:80", "accept *:+80", "accept *:080",
		"accept 1.2.3.4/-1:80", "accept [::1]/129:80", "accept *:80-", "accept *:-80",
	} {
		if r, err := ParseRule(in); err == nil {
			t.Errorf("%q parsed as %v", in, r)
		}
	}
}

func TestPolicyAllows(t *testing.T) {
	p, err := Parse([]string{"# comment", "", "reject 1.2.3.4:*", "accept *:80", "accept [2606:4700::]/32:443", "reject *:*"}, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dest string
		want bool
	}{
		{"1.2.3.5:80", true},
		{"1.2.3.4:80", false},          // the first rule
		{"[::ffff:1.2.3.4]:80", false}, // the same, IPv4-mapped
		{"[::ffff:1.2.3.5]:80", true},
		{"1.2.3.5:81", false}, // reject *:*
		{"[2606:4700::1]:443", true},
		{"[2606:4701::1]:443", false},
		{"[2606:4701::1]:80", true},
		// Special destinations, whatever the rules say.
		{"127.0.0.1:80", false}, {"10.1.2.3:80", false}, {"172.16.0.1:80", false}, {"172.31.255.255:80", false},
		{"192.168.1.1:80", false}, {"169.254.1.1:80", false}, {"100.64.0.1:80", false}, {"100.127.255.255:80", false},
		{"224.0.0.1:80", false}, {"239.255.255.250:80", false}, {"0.0.0.0:80", false}, {"255.255.255.255:80", false},
		{"[::1]:80", false}, {"[::]:80", false}, {"[fe80::1]:80", false}, {"[fd00::1]:80", false}, {"[ff02::1]:80", false},
		{"[::ffff:127.0.0.1]:80", false}, {"[::ffff:10.0.0.1]:80", false}, {"[::ffff:169.254.0.1]:80", false},
		{"[2002:7f00:1::]:80", false}, {"[64:ff9b::a00:1]:80", false}, {"[64:ff9b::102:305]:80", true},
		{"172.32.0.1:80", true}, {"100.128.0.1:80", true},
	} {
		if got := p.Allows(netip.MustParseAddrPort(tc.dest)); got != tc.want {
			t.Errorf("%s: Allows %v, want %v", tc.dest, got, tc.want)
		}
	}
	// The zero policy refuses everything; a port of 0 is never allowed.
	if (Policy{}).Allows(netip.MustParseAddrPort("1.2.3.5:80")) {
		t.Error("zero policy allowed a destination")
	}
	open := Policy{Rules: []Rule{mustRule(t, "accept *:*")}, AllowPrivate: true}
	if open.Allows(netip.AddrPortFrom(netip.MustParseAddr("1.2.3.5"), 0)) {
		t.Error("port 0 allowed")
	}
}

func TestAllowPrivateLetsRulesDecide(t *testing.T) {
	p, err := Parse([]string{"accept 127.0.0.1:*", "reject *:*"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Allows(netip.MustParseAddrPort("127.0.0.1:8080")) || !p.Allows(netip.MustParseAddrPort("[::ffff:127.0.0.1]:8080")) {
		t.Error("127.0.0.1 refused with AllowPrivate and an accept rule")
	}
	if p.Allows(netip.MustParseAddrPort("10.0.0.1:80")) || p.Allows(netip.MustParseAddrPort("[::1]:80")) {
		t.Error("a destination no rule accepts was allowed")
	}
	p.AllowPrivate = false
	if p.Allows(netip.MustParseAddrPort("127.0.0.1:8080")) {
		t.Error("127.0.0.1 allowed without AllowPrivate")
	}
	// "private" names the same set for a rule.
	q, _ := Parse([]string{"reject private:*", "accept *:*"}, true)
	if q.Allows(netip.MustParseAddrPort("192.168.0.1:1")) || !q.Allows(netip.MustParseAddrPort("8.8.8.8:1")) {
		t.Error("reject private:* does not match private addresses only")
	}
}

func TestAcceptsPort(t *testing.T) {
	p, _ := Parse([]string{"reject *:25", "accept 1.2.3.4:25", "accept 127.0.0.1:1000-2000", "reject *:*"}, true)
	for port, want := range map[uint16]bool{25: false, 1000: true, 1500: true, 2001: false, 80: false} {
		if got := p.AcceptsPort(port); got != want {
			t.Errorf("AcceptsPort(%d) = %v, want %v", port, got, want)
		}
	}
}

func TestParseLineNumbers(t *testing.T) {
	if _, err := Parse([]string{"accept *:80", "bogus"}, false); err == nil || err.Error()[:6] != "line 2" {
		t.Fatalf("error %v does not name line 2", err)
	}
}

func mustRule(t *testing.T, s string) Rule {
	t.Helper()
	r, err := ParseRule(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// FuzzParseRule: no input panics; a rule that parses prints as a rule
// that parses to the same rule.
func FuzzParseRule(f *testing.F) {
	for _, s := range []string{"accept *:*", "reject 10.0.0.0/8:1-1024", "accept [::1]/64:80", "reject private:*", "accept 1.2.3.4/255.255.0.0:443", "accept *6:8080"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRule(s)
		if err != nil {
			return
		}
		r2, err := ParseRule(r.String())
		if err != nil || r2 != r {
			t.Fatalf("%q -> %q -> %v %v", s, r.String(), r2, err)
		}
		for _, ap := range []string{"1.2.3.4:80", "[::1]:443", "127.0.0.1:1"} {
			_ = r.Matches(netip.MustParseAddrPort(ap))
		}
	})
}

func TestPortSummary(t *testing.T) {
	for _, tc := range []struct {
		lines        []string
		allowPrivate bool
		max          int
		want         []proto.PortRange
	}{
		{[]string{"accept *:80", "accept *:443", "reject *:*"}, false, 16, []proto.PortRange{{Lo: 80, Hi: 80}, {Lo: 443, Hi: 443}}},
		{[]string{"reject *:25", "accept *:*"}, false, 16, []proto.PortRange{{Lo: 1, Hi: 24}, {Lo: 26, Hi: 65535}}},
		{[]string{"reject 1.2.3.4:*", "accept *:*"}, false, 16, []proto.PortRange{{Lo: 1, Hi: 65535}}},
		{[]string{"accept *:80-90", "accept *:91-100", "reject *:*"}, false, 16, []proto.PortRange{{Lo: 80, Hi: 100}}},
		{[]string{"reject *:*"}, false, 16, nil},
		{[]string{"accept 127.0.0.1:8080", "reject *:*"}, false, 16, nil}, // refused anyway without allow_private
		{[]string{"accept 127.0.0.1:8080", "reject *:*"}, true, 16, []proto.PortRange{{Lo: 8080, Hi: 8080}}},
		{[]string{"accept *:10", "accept *:20", "accept *:100", "accept *:1000"}, false, 2, []proto.PortRange{{Lo: 10, Hi: 100}, {Lo: 1000, Hi: 1000}}},
	} {
		p, err := Parse(tc.lines, tc.allowPrivate)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.PortSummary(tc.max); !slices.Equal(got, tc.want) {
			t.Errorf("%q: %v, want %v", tc.lines, got, tc.want)
		}
	}
}
