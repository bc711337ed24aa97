package onion

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"veil/proto"
)

func validCreate2() Create2 {
	return Create2{HType: HandshakeNtor, HData: bytes.Repeat([]byte{7}, NtorClientLen)}
}

func validExtend2(addr string) Extend2 {
	return Extend2{Next: proto.NodeID{1, 2, 3, 4}, Addr: netip.MustParseAddrPort(addr), Create: validCreate2()}
}

// handshakeSeeds are valid encodings of the handshake family, tagged with
// the first byte the fuzzer uses to pick the parser.
func handshakeSeeds() [][]byte {
	return [][]byte{
		append([]byte{0}, validCreate2().Append(nil)...),
		append(append([]byte{0}, validCreate2().Append(nil)...), make([]byte, 20)...),
		append([]byte{1}, Created2{HData: bytes.Repeat([]byte{9}, NtorServerLen)}.Append(nil)...),
		append([]byte{2}, validExtend2("127.0.0.1:7700").Append(nil)...),
		append([]byte{2}, validExtend2("[2001:db8::1]:443").Append(nil)...),
	}
}

func relayBodySeeds() [][]byte {
	return [][]byte{
		{0},
		append([]byte{0}, Sendme{Version: 1, Data: make([]byte, TagSize)}.Append(nil)...),
		append([]byte{1}, Begin{Dest: "echo"}.Append(nil)...),
		{2, 5},
	}
}

func FuzzHandshakeBodies(f *testing.F) {
	for _, s := range handshakeSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		b := in[1:]
		var enc []byte
		var n int
		pad := false
		switch in[0] % 3 {
		case 0:
			m, err := ParseCreate2(b)
			if err != nil {
				return
			}
			enc, n, pad = m.Append(nil), m.Len(), true
		case 1:
			m, err := ParseCreated2(b)
			if err != nil {
				return
			}
			enc, n, pad = m.Append(nil), m.Len(), true
		case 2:
			m, err := ParseExtend2(b)
			if err != nil {
				return
			}
			if !m.Addr.IsValid() {
				t.Fatal("parsed an invalid address")
			}
			enc, n = m.Append(nil), m.Len()
		}
		checkReencode(t, b, enc, n, pad)
	})
}

func FuzzRelayBodies(f *testing.F) {
	for _, s := range relayBodySeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		b := in[1:]
		switch in[0] % 3 {
		case 0:
			m, err := ParseSendme(b)
			if err != nil {
				return
			}
			checkReencode(t, b, m.Append(nil), m.Len(), false)
		case 1:
			m, err := ParseBegin(b)
			if err != nil {
				return
			}
			if !m.Valid() {
				t.Fatal("parsed an invalid BEGIN")
			}
			checkReencode(t, b, m.Append(nil), m.Len(), false)
		case 2:
			r, err := ParseReason(b)
			if err != nil {
				return
			}
			if len(b) == 1 && r != b[0] {
				t.Fatal("reason mismatch")
			}
		}
	})
}

func checkReencode(t *testing.T, in, enc []byte, n int, pad bool) {
	t.Helper()
	if n != len(enc) {
		t.Fatalf("Len %d, Append gave %d bytes", n, len(enc))
	}
	if !pad && len(in) != n {
		t.Fatalf("parsed %d bytes, re-encoded %d", len(in), n)
	}
	if len(in) < n || !bytes.Equal(in[:n], enc) {
		t.Fatalf("re-encoding differs:\n in  %x\n out %x", in, enc)
	}
	for _, c := range in[n:] {
		if c != 0 {
			t.Fatal("accepted non-zero padding")
		}
	}
}

func TestTruncatedHandshakeBodies(t *testing.T) {
	for _, s := range handshakeSeeds() {
		full := s[1:]
		var n int
		switch s[0] {
		case 0:
			m, _ := ParseCreate2(full)
			n = m.Len()
		case 1:
			m, _ := ParseCreated2(full)
			n = m.Len()
		case 2:
			m, err := ParseExtend2(full)
			if err != nil {
				t.Fatal(err)
			}
			n = m.Len()
		}
		for i := range n {
			var err error
			switch s[0] {
			case 0:
				_, err = ParseCreate2(full[:i])
			case 1:
				_, err = ParseCreated2(full[:i])
			case 2:
				_, err = ParseExtend2(full[:i])
			}
			if !errors.Is(err, proto.ErrTruncated) {
				t.Fatalf("kind %d: prefix of %d/%d bytes: %v", s[0], i, n, err)
			}
		}
	}
}

func TestTruncatedRelayBodies(t *testing.T) {
	s := Sendme{Version: 1, Data: make([]byte, TagSize)}.Append(nil)
	for i := 1; i < len(s); i++ {
		if _, err := ParseSendme(s[:i]); !errors.Is(err, proto.ErrTruncated) {
			t.Fatalf("sendme prefix %d: %v", i, err)
		}
	}
	b := Begin{Dest: "ordb"}.Append(nil)
	for i := range len(b) {
		if _, err := ParseBegin(b[:i]); err == nil {
			t.Fatalf("begin prefix %d accepted", i)
		}
	}
}

func TestWireRefusals(t *testing.T) {
	// Non-zero padding after a CREATE2 body.
	b := append(validCreate2().Append(nil), 0, 0, 1)
	if _, err := ParseCreate2(b); !errors.Is(err, proto.ErrTrailing) {
		t.Fatalf("create2 garbage: %v", err)
	}
	// HLEN over the cell.
	if _, err := ParseCreate2([]byte{0, 2, 0xff, 0xff}); !errors.Is(err, proto.ErrTooLong) {
		t.Fatalf("create2 hlen: %v", err)
	}
	// EXTEND2 with a 5-byte IP, and with trailing bytes.
	e := validExtend2("10.0.0.1:1").Append(nil)
	bad := bytes.Clone(e)
	bad[proto.IDSize] = 5
	if _, err := ParseExtend2(bad); !errors.Is(err, proto.ErrBadLength) {
		t.Fatalf("extend2 ip len: %v", err)
	}
	if _, err := ParseExtend2(append(e, 0)); !errors.Is(err, proto.ErrTrailing) {
		t.Fatalf("extend2 trailing: %v", err)
	}
	got, err := ParseExtend2(e)
	if err != nil || got.Addr.String() != "10.0.0.1:1" || got.Next != (proto.NodeID{1, 2, 3, 4}) {
		t.Fatalf("extend2: %v %+v", err, got)
	}
	if _, err := ParseBegin([]byte{0}); err == nil {
		t.Fatal("empty BEGIN destination accepted")
	}
	if _, err := ParseReason([]byte{1, 2}); err == nil {
		t.Fatal("two-byte reason accepted")
	}
	if _, err := ParseSendme([]byte{0, 0, 0}); err == nil {
		t.Fatal("non-canonical empty SENDME accepted")
	}
}
