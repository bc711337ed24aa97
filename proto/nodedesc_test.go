package proto

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"net/netip"
	"testing"
	"time"
)

// testDescriptor returns a signed descriptor from a fixed seed.
func testDescriptor(t testing.TB, addrs ...netip.AddrPort) (NodeDescriptor, ed25519.PrivateKey) {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	pub := priv.Public().(ed25519.PublicKey)
	d := NodeDescriptor{
		ID:          NodeIDFromKey(pub),
		IdentityKey: pub,
		OnionKey:    bytes.Repeat([]byte{9}, OnionKeySize),
		Addrs:       addrs,
		Flags:       FlagRelay | FlagORDB,
		ValidAfter:  1000,
		ValidUntil:  2000,
	}
	d.Sign(priv)
	return d, priv
}

var descAddrs = []netip.AddrPort{
	netip.MustParseAddrPort("127.0.0.1:7700"),
	netip.MustParseAddrPort("[::1]:7701"),
	netip.MustParseAddrPort("[::ffff:10.0.0.1]:80"),
	netip.MustParseAddrPort("192.168.1.1:65535"),
}

func TestNodeDescriptorRoundTrip(t *testing.T) {
	for n := 0; n <= len(descAddrs); n++ {
		d, _ := testDescriptor(t, descAddrs[:n]...)
		b := d.Append(nil)
		if len(b) != d.Len() {
			t.Fatalf("%d addrs: Len %d, encoded %d", n, d.Len(), len(b))
		}
		got, err := ParseNodeDescriptor(b)
		if err != nil {
			t.Fatalf("%d addrs: parse: %v", n, err)
		}
		if !bytes.Equal(got.Append(nil), b) {
			t.Fatalf("%d addrs: re-encoding differs", n)
		}
		if len(got.Addrs) != n {
			t.Fatalf("%d addrs: got %d", n, len(got.Addrs))
		}
		for i := range got.Addrs {
			if got.Addrs[i] != descAddrs[i] {
				t.Fatalf("addr %d: got %v want %v", i, got.Addrs[i], descAddrs[i])
			}
		}
		if err := got.Verify(time.Unix(1500, 0)); err != nil {
			t.Fatalf("%d addrs: verify: %v", n, err)
		}
	}
}

func TestNodeDescriptorTruncated(t *testing.T) {
	d, _ := testDescriptor(t, descAddrs...)
	b := d.Append(nil)
	for i := 0; i < len(b); i++ {
		if _, err := ParseNodeDescriptor(b[:i]); err == nil {
			t.Fatalf("prefix of %d/%d bytes parsed", i, len(b))
		}
	}
	if _, err := ParseNodeDescriptor(append(b, 0)); !errors.Is(err, ErrTrailing) {
		t.Fatalf("trailing byte: got %v, want ErrTrailing", err)
	}
}

func TestNodeDescriptorBadFields(t *testing.T) {
	d, _ := testDescriptor(t, descAddrs[:1]...)
	good := d.Append(nil)
	const addrCount = IDSize + IdentityKeySize + OnionKeySize + 1
	cases := []struct {
		name string
		edit func(b []byte) []byte
		want error
	}{
		{"unknown flag", func(b []byte) []byte { b[addrCount-1] |= 0x80; return b }, ErrBadValue},
		{"too many addrs", func(b []byte) []byte { b[addrCount] = MaxDescriptorAddrs + 1; return b }, ErrTooLong},
		{"IP length 5", func(b []byte) []byte { b[addrCount+1] = 5; return b }, ErrBadLength},
		{"IP length 17", func(b []byte) []byte { b[addrCount+1] = 17; return b }, ErrTooLong},
		{"port 0", func(b []byte) []byte { b[addrCount+6], b[addrCount+7] = 0, 0; return b }, ErrBadValue},
		{"until before after", func(b []byte) []byte {
			off := addrCount + 1 + 7 + 1
			copy(b[off+8:off+16], b[off:off+8])
			return b
		}, ErrBadValue},
	}
	for _, c := range cases {
		b := c.edit(bytes.Clone(good))
		if _, err := ParseNodeDescriptor(b); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

func TestNodeDescriptorVerify(t *testing.T) {
	d, priv := testDescriptor(t, descAddrs[:2]...)
	now := time.Unix(1500, 0)
	if err := d.Verify(now); err != nil {
		t.Fatalf("good descriptor: %v", err)
	}
	// Validity window: ValidAfter inclusive, ValidUntil exclusive.
	for _, c := range []struct {
		at int64
		ok bool
	}{{999, false}, {1000, true}, {1999, true}, {2000, false}, {-1, false}} {
		err := d.Verify(time.Unix(c.at, 0))
		if c.ok != (err == nil) || (!c.ok && !errors.Is(err, ErrDescriptorExpired)) {
			t.Errorf("at %d: got %v", c.at, err)
		}
	}
	// Tampering with any signed field breaks the signature.
	tampered := d
	tampered.Flags |= FlagExit
	if err := tampered.Verify(now); !errors.Is(err, ErrDescriptorSignature) {
		t.Errorf("tampered flags: got %v", err)
	}
	tampered = d
	tampered.Addrs = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.2:1")}
	if err := tampered.Verify(now); !errors.Is(err, ErrDescriptorSignature) {
		t.Errorf("tampered addr: got %v", err)
	}
	tampered = d
	tampered.OnionKey = bytes.Repeat([]byte{1}, OnionKeySize)
	if err := tampered.Verify(now); !errors.Is(err, ErrDescriptorSignature) {
		t.Errorf("tampered onion key: got %v", err)
	}
	// Extending the validity needs a new signature.
	tampered = d
	tampered.ValidUntil = 5000
	if err := tampered.Verify(time.Unix(3000, 0)); !errors.Is(err, ErrDescriptorSignature) {
		t.Errorf("extended validity: got %v", err)
	}
	// A wrong ID is refused even if the holder of the key signed it.
	wrong := d
	wrong.ID[0] ^= 1
	wrong.Sign(priv)
	if err := wrong.Verify(now); !errors.Is(err, ErrDescriptorID) {
		t.Errorf("wrong ID: got %v", err)
	}
	// Someone else's key cannot sign for this ID.
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, ed25519.SeedSize))
	forged := d
	forged.Sign(other)
	if err := forged.Verify(now); !errors.Is(err, ErrDescriptorSignature) {
		t.Errorf("forged: got %v", err)
	}
	// The domain prefix is part of what is signed.
	body := d.Append(nil)[:d.Len()-SignatureSize]
	if ed25519.Verify(ed25519.PublicKey(d.IdentityKey), body, d.Signature) {
		t.Error("signature verifies without the domain prefix")
	}
	if !bytes.HasPrefix(d.SignedBytes(), []byte(NodeDescriptorDomain)) {
		t.Error("SignedBytes lacks the domain prefix")
	}
}

// exitDescriptor is testDescriptor of an exit with a port summary.
func exitDescriptor(t testing.TB) NodeDescriptor {
	d, priv := testDescriptor(t, descAddrs[:1]...)
	d.Flags |= FlagExit
	d.ExitPorts = []PortRange{{80, 80}, {443, 443}, {8000, 8999}}
	d.Sign(priv)
	return d
}

func TestNodeDescriptorExitPorts(t *testing.T) {
	d := exitDescriptor(t)
	b := d.Append(nil)
	got, err := ParseNodeDescriptor(b)
	if err != nil || got.Verify(time.Unix(1500, 0)) != nil {
		t.Fatalf("parse: %v", err)
	}
	if len(got.ExitPorts) != 3 || got.ExitPorts[2] != (PortRange{8000, 8999}) || got.Len() != len(b) {
		t.Fatalf("exit ports %v, Len %d of %d", got.ExitPorts, got.Len(), len(b))
	}
	for port, want := range map[uint16]bool{80: true, 81: false, 443: true, 8000: true, 8999: true, 9000: false} {
		if got.AcceptsPort(port) != want {
			t.Errorf("AcceptsPort(%d) = %v", port, !want)
		}
	}
	for i := range b {
		if _, err := ParseNodeDescriptor(b[:i]); err == nil {
			t.Fatalf("prefix of %d/%d bytes parsed", i, len(b))
		}
	}
	for name, ports := range map[string][]PortRange{
		"port 0":      {{0, 10}},
		"backwards":   {{10, 5}},
		"overlapping": {{10, 20}, {20, 30}},
		"adjacent":    {{10, 20}, {21, 30}},
		"descending":  {{100, 200}, {10, 20}},
		"too many":    make([]PortRange, MaxExitPortRanges+1),
	} {
		bad := d
		bad.ExitPorts = ports
		if err := bad.Validate(); err == nil {
			t.Errorf("%s: %v validated", name, ports)
		}
	}
	noExit := d
	noExit.Flags &^= FlagExit
	if err := noExit.Validate(); !errors.Is(err, ErrBadValue) {
		t.Errorf("exit ports without FlagExit: %v", err)
	}
}

func FuzzNodeDescriptor(f *testing.F) {
	for n := 0; n <= len(descAddrs); n++ {
		d, _ := testDescriptor(f, descAddrs[:n]...)
		f.Add(d.Append(nil))
	}
	f.Add(exitDescriptor(f).Append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseNodeDescriptor(b)
		if err != nil {
			return
		}
		out := d.Append(nil)
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b, out)
		}
		if d.Len() != len(out) {
			t.Fatalf("Len %d, encoded %d", d.Len(), len(out))
		}
		_ = d.Verify(time.Unix(1500, 0))
	})
}
