package proto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

// wireMsg is what every message of this package offers.
type wireMsg interface {
	Len() int
	Append(b []byte) []byte
}

func sampleCreate2s() []Create2 {
	return []Create2{
		{HType: HandshakeNtor, HData: fill(NtorRequestSize, 7)},
		{HType: 9},
		{HType: 0xffff, HData: fill(MaxCreate2HLen, 1)},
	}
}

func sampleCreated2s() []Created2 {
	return []Created2{
		{HData: fill(NtorReplySize, 9)},
		{},
		{HData: fill(MaxCreated2HLen, 2)},
	}
}

func sampleExtend2s() []Extend2 {
	return []Extend2{
		{Next: NodeID{1, 2, 3, 4}, Addr: netip.MustParseAddrPort("127.0.0.1:7700"), Create: sampleCreate2s()[0]},
		{Next: nodeID(5), Addr: netip.MustParseAddrPort("[2001:db8::1]:443"), Create: sampleCreate2s()[0]},
		{Next: nodeID(6), Addr: netip.MustParseAddrPort("[::1]:1"), Create: Create2{HType: 3, HData: fill(MaxExtend2HLen, 4)}},
		{Addr: netip.MustParseAddrPort("0.0.0.0:0"), Create: Create2{}},
	}
}

func sampleNtorRequest() NtorRequest {
	return NtorRequest{ID: nodeID(1), B: [OnionKeySize]byte{2, 3}, X: [OnionKeySize]byte{31: 4}}
}

func sampleNtorReply() NtorReply {
	return NtorReply{Y: [OnionKeySize]byte{5}, Auth: [NtorAuthSize]byte{31: 6}}
}

func sampleSendmes() []Sendme {
	return []Sendme{
		{},
		{Version: SendmeVersionTag, Data: fill(SendmeTagSize, 8)},
		{Version: 0, Data: []byte{1}},
		{Version: 200, Data: fill(MaxSendmeData, 3)},
	}
}

func sampleBegins() []Begin {
	return []Begin{{Dest: "echo"}, {Dest: "ordb"}, {Dest: "example.org:443"}, {Dest: string(fill(MaxBeginDest, 'x'))}}
}

func sampleEnds() []End { return []End{{}, {Reason: 6}, {Reason: 255}} }

// checkReencode is the post-condition of every fuzzer: the message
// re-encodes to the bytes it was parsed from, and Len is the encoding's
// size. With padded, the input may go on with zero bytes (a fixed cell's
// padding).
func checkReencode(t *testing.T, in []byte, m wireMsg, padded bool) {
	t.Helper()
	enc := m.Append(nil)
	if m.Len() != len(enc) {
		t.Fatalf("Len %d, Append gave %d bytes", m.Len(), len(enc))
	}
	if len(in) < len(enc) || !bytes.Equal(in[:len(enc)], enc) {
		t.Fatalf("re-encoding differs:\n in  %x\n out %x", in, enc)
	}
	if !padded && len(in) != len(enc) {
		t.Fatalf("parsed %d bytes, re-encoded %d", len(in), len(enc))
	}
	for _, c := range in[len(enc):] {
		if c != 0 {
			t.Fatal("accepted non-zero padding")
		}
	}
}

// fuzzWire seeds f with the encodings of seeds (and, for padded bodies, the
// same in a whole cell payload) and checks every successful parse.
func fuzzWire[M wireMsg](f *testing.F, seeds []M, parse func([]byte) (M, error), padded bool) {
	for _, m := range seeds {
		b := m.Append(nil)
		f.Add(b)
		if padded {
			f.Add(append(b, make([]byte, CellPayloadSize-len(b))...))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parse(b)
		if err != nil {
			return
		}
		checkReencode(t, b, m, padded)
	})
}

func FuzzCreate2(f *testing.F)  { fuzzWire(f, sampleCreate2s(), ParseCreate2, true) }
func FuzzCreated2(f *testing.F) { fuzzWire(f, sampleCreated2s(), ParseCreated2, true) }
func FuzzSendme(f *testing.F)   { fuzzWire(f, sampleSendmes(), ParseSendme, false) }
func FuzzEnd(f *testing.F)      { fuzzWire(f, sampleEnds(), ParseEnd, false) }

func FuzzNtorRequest(f *testing.F) {
	fuzzWire(f, []NtorRequest{sampleNtorRequest(), {}}, ParseNtorRequest, false)
}

func FuzzNtorReply(f *testing.F) {
	fuzzWire(f, []NtorReply{sampleNtorReply(), {}}, ParseNtorReply, false)
}

// FuzzExtend2 also checks that a parsed address can be re-encoded as read.
func FuzzExtend2(f *testing.F) {
	fuzzWire(f, sampleExtend2s(), func(b []byte) (Extend2, error) {
		e, err := ParseExtend2(b)
		if err == nil && (!e.Addr.IsValid() || e.Addr.Addr().Zone() != "") {
			panic("parsed an address that does not re-encode")
		}
		return e, err
	}, false)
}

// FuzzBegin also checks that a parsed BEGIN can be encoded.
func FuzzBegin(f *testing.F) {
	fuzzWire(f, sampleBegins(), func(b []byte) (Begin, error) {
		m, err := ParseBegin(b)
		if err == nil && !m.Valid() {
			panic("parsed a BEGIN that cannot be encoded")
		}
		return m, err
	}, false)
}

// onionCases lists a valid encoding of every onion body with its parser.
func onionCases() []struct {
	name  string
	b     []byte
	parse func([]byte) (wireMsg, error)
} {
	type tc = struct {
		name  string
		b     []byte
		parse func([]byte) (wireMsg, error)
	}
	var out []tc
	add := func(name string, m wireMsg, parse func([]byte) (wireMsg, error)) {
		out = append(out, tc{name, m.Append(nil), parse})
	}
	for _, m := range sampleCreate2s() {
		add("create2", m, func(b []byte) (wireMsg, error) { return ParseCreate2(b) })
	}
	for _, m := range sampleCreated2s() {
		add("created2", m, func(b []byte) (wireMsg, error) { return ParseCreated2(b) })
	}
	for _, m := range sampleExtend2s() {
		add("extend2", m, func(b []byte) (wireMsg, error) { return ParseExtend2(b) })
	}
	add("ntor request", sampleNtorRequest(), func(b []byte) (wireMsg, error) { return ParseNtorRequest(b) })
	add("ntor reply", sampleNtorReply(), func(b []byte) (wireMsg, error) { return ParseNtorReply(b) })
	for _, m := range sampleSendmes() {
		add("sendme", m, func(b []byte) (wireMsg, error) { return ParseSendme(b) })
	}
	for _, m := range sampleBegins() {
		add("begin", m, func(b []byte) (wireMsg, error) { return ParseBegin(b) })
	}
	for _, m := range sampleEnds() {
		add("end", m, func(b []byte) (wireMsg, error) { return ParseEnd(b) })
	}
	return out
}

func TestOnionRoundTrip(t *testing.T) {
	for _, c := range onionCases() {
		m, err := c.parse(c.b)
		if err != nil {
			t.Fatalf("%s %x: %v", c.name, c.b, err)
		}
		if re := m.Append(nil); !bytes.Equal(re, c.b) || m.Len() != len(re) {
			t.Fatalf("%s: re-encoding differs or Len %d", c.name, m.Len())
		}
	}
	// CREATE2 and CREATED2 fill a cell: zero padding is accepted.
	for _, c := range onionCases()[:len(sampleCreate2s())+len(sampleCreated2s())] {
		padded := append(bytes.Clone(c.b), make([]byte, CellPayloadSize-len(c.b))...)
		if m, err := c.parse(padded); err != nil || !bytes.Equal(m.Append(nil), c.b) {
			t.Fatalf("%s padded: %v", c.name, err)
		}
	}
}

// TestOnionTruncated feeds every proper prefix of each valid body: each
// must fail with ErrTruncated. The one exception is the empty SENDME, which
// is the whole (version 0) message.
func TestOnionTruncated(t *testing.T) {
	for _, c := range onionCases() {
		for i := range len(c.b) {
			if c.name == "sendme" && i == 0 {
				if m, err := c.parse(nil); err != nil || m.Len() != 0 {
					t.Fatalf("empty SENDME: %v", err)
				}
				continue
			}
			if _, err := c.parse(c.b[:i]); !errors.Is(err, ErrTruncated) {
				t.Fatalf("%s: prefix of %d/%d bytes: %v", c.name, i, len(c.b), err)
			}
		}
	}
}

// TestOnionExactBytes pins each layout to hand-written bytes.
func TestOnionExactBytes(t *testing.T) {
	tests := []struct {
		name string
		m    wireMsg
		hex  string
	}{
		{"create2", Create2{HType: 2, HData: []byte{0xaa, 0xbb}}, "0002 0002 aabb"},
		{"created2", Created2{HData: []byte{0xcc}}, "0001 cc"},
		{"extend2 v4", Extend2{Next: nodeID(0x11), Addr: netip.MustParseAddrPort("10.0.0.1:258"), Create: Create2{HType: 2}},
			"1111111111111111111111111111111111111111 04 0a000001 0102 0002 0000"},
		{"extend2 v6", Extend2{Next: nodeID(0x22), Addr: netip.MustParseAddrPort("[::1]:80"), Create: Create2{HType: 2, HData: []byte{1}}},
			"2222222222222222222222222222222222222222 10 00000000000000000000000000000001 0050 0002 0001 01"},
		{"extend2 v4-mapped is v6", Extend2{Next: nodeID(0x33), Addr: netip.MustParseAddrPort("[::ffff:10.0.0.1]:1")},
			"3333333333333333333333333333333333333333 10 00000000000000000000ffff0a000001 0001 0000 0000"},
		{"sendme v0", Sendme{}, ""},
		{"sendme v1", Sendme{Version: 1, Data: []byte{1, 2}}, "01 0002 0102"},
		{"begin", Begin{Dest: "ordb"}, "04 6f726462"},
		{"end", End{Reason: 9}, "09"},
		{"ntor reply", NtorReply{Y: [32]byte{0: 1}, Auth: [32]byte{31: 2}},
			"0100000000000000000000000000000000000000000000000000000000000000" +
				"0000000000000000000000000000000000000000000000000000000000000002"},
	}
	for _, tt := range tests {
		if got, want := tt.m.Append(nil), unhex(t, tt.hex); !bytes.Equal(got, want) {
			t.Errorf("%s:\n got  %x\n want %x", tt.name, got, want)
		}
	}
}

// TestOnionRefusals checks what each parser must refuse, and with which
// error.
func TestOnionRefusals(t *testing.T) {
	create := sampleCreate2s()[0].Append(nil)
	ext := sampleExtend2s()[0].Append(nil)
	badIP := bytes.Clone(ext)
	badIP[IDSize] = 5
	// An EXTEND2 whose HDATA would not fit one relay cell.
	bigHLen := Extend2{Addr: netip.MustParseAddrPort("[::1]:1"), Create: Create2{HData: fill(MaxExtend2HLen+1, 0)}}.Append(nil)
	parse := map[string]func([]byte) error{
		"create2":  func(b []byte) error { _, err := ParseCreate2(b); return err },
		"created2": func(b []byte) error { _, err := ParseCreated2(b); return err },
		"extend2":  func(b []byte) error { _, err := ParseExtend2(b); return err },
		"ntorreq":  func(b []byte) error { _, err := ParseNtorRequest(b); return err },
		"ntorrep":  func(b []byte) error { _, err := ParseNtorReply(b); return err },
		"sendme":   func(b []byte) error { _, err := ParseSendme(b); return err },
		"begin":    func(b []byte) error { _, err := ParseBegin(b); return err },
		"end":      func(b []byte) error { _, err := ParseEnd(b); return err },
	}
	tests := []struct {
		name, parser string
		b            []byte
		want         error
	}{
		{"create2 non-zero padding", "create2", append(bytes.Clone(create), 0, 0, 1), ErrTrailing},
		{"create2 hlen over the cell", "create2", []byte{0, 2, 0xff, 0xff}, ErrTooLong},
		{"create2 hlen just over", "create2", binary.BigEndian.AppendUint16([]byte{0, 2}, MaxCreate2HLen+1), ErrTooLong},
		{"created2 non-zero padding", "created2", []byte{0, 1, 5, 0, 7}, ErrTrailing},
		{"created2 hlen over the cell", "created2", []byte{0xff, 0xff}, ErrTooLong},
		{"extend2 5-byte IP", "extend2", badIP, ErrBadLength},
		{"extend2 trailing zero", "extend2", append(bytes.Clone(ext), 0), ErrTrailing},
		{"extend2 hlen over a relay cell", "extend2", bigHLen, ErrTooLong},
		{"ntor request long", "ntorreq", fill(NtorRequestSize+1, 0), ErrTrailing},
		{"ntor reply long", "ntorrep", fill(NtorReplySize+1, 0), ErrTrailing},
		{"sendme empty version 0", "sendme", []byte{0, 0, 0}, ErrBadValue},
		{"sendme data over a cell", "sendme", []byte{1, 0xff, 0xff}, ErrTooLong},
		{"sendme trailing", "sendme", []byte{1, 0, 1, 9, 9}, ErrTrailing},
		{"begin empty destination", "begin", []byte{0}, ErrBadLength},
		{"begin trailing", "begin", []byte{1, 'a', 'b'}, ErrTrailing},
		{"end two bytes", "end", []byte{1, 2}, ErrTrailing},
	}
	for _, tt := range tests {
		if err := parse[tt.parser](tt.b); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	got, err := ParseExtend2(ext)
	if err != nil || got.Addr.String() != "127.0.0.1:7700" || got.Next != (NodeID{1, 2, 3, 4}) {
		t.Fatalf("extend2: %v %+v", err, got)
	}
}

func TestBeginAppendPanicsOutOfRange(t *testing.T) {
	for _, m := range []Begin{{}, {Dest: string(fill(MaxBeginDest+1, 'x'))}} {
		if m.Valid() {
			t.Fatalf("%d-byte destination valid", len(m.Dest))
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%d-byte destination encoded", len(m.Dest))
				}
			}()
			m.Append(nil)
		}()
	}
}
