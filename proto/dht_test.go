package proto

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// dhtTestKey is a fixed identity so encodings (and the fuzz corpus) are
// the same on every run.
func dhtTestKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

var dhtTestNow = time.Unix(1_800_000_000, 0)

func dhtTestRecord(seed byte, addr netip.AddrPort) ProviderRecord {
	r := ProviderRecord{
		Key:         HashName{1, 2, 3, seed},
		OnionKey:    bytes.Repeat([]byte{seed + 1}, OnionKeySize),
		Addr:        addr,
		Pieces:      2,
		Facilitator: seed%2 == 1,
		Expires:     uint64(dhtTestNow.Unix()) + 3600,
	}
	r.Sign(dhtTestKey(seed))
	return r
}

// dhtTestDescriptor is a node descriptor signed by dhtTestKey(seed).
func dhtTestDescriptor(seed byte, addrs ...netip.AddrPort) NodeDescriptor {
	priv := dhtTestKey(seed)
	pub := priv.Public().(ed25519.PublicKey)
	d := NodeDescriptor{
		ID:          NodeIDFromKey(pub),
		IdentityKey: pub,
		OnionKey:    bytes.Repeat([]byte{seed + 1}, OnionKeySize),
		Addrs:       addrs,
		Flags:       FlagRelay | FlagORDB,
		ValidAfter:  uint64(dhtTestNow.Unix()),
		ValidUntil:  uint64(dhtTestNow.Unix()) + 3600,
	}
	d.Sign(priv)
	return d
}

func dhtTestMessages() []DHTMessage {
	v4 := netip.MustParseAddrPort("127.0.0.1:7700")
	v6 := netip.MustParseAddrPort("[::1]:7701")
	mapped := netip.AddrPortFrom(netip.AddrFrom16(netip.MustParseAddr("127.0.0.2").As16()), 9)
	peer := DBPeer{ID: NodeID{9}, Addr: v4, OnionKey: bytes.Repeat([]byte{7}, OnionKeySize)}
	peer2 := DBPeer{ID: NodeID{10}, OnionKey: bytes.Repeat([]byte{8}, OnionKeySize)}
	contacts := []DHTContact{{ID: NodeID{1}, Addr: v4}, {ID: NodeID{2}, Addr: v6}, {ID: NodeID{3}}, {ID: NodeID{4}, Addr: mapped}}
	var full []DHTContact
	var recs []ProviderRecord
	for i := range MaxDHTContacts {
		full = append(full, DHTContact{ID: NodeID{byte(i)}, Addr: v6})
	}
	for i := range MaxDHTRecords {
		recs = append(recs, dhtTestRecord(byte(i), v6))
	}
	return []DHTMessage{
		{Type: DHTPing, TxID: 1, Sender: v4},
		{Type: DHTPing, TxID: 2},
		{Type: DHTPong, TxID: 1},
		{Type: DHTFindNode, TxID: 3, Sender: v6, Target: NodeID{0xff, 1}},
		{Type: DHTNodes, TxID: 3, Contacts: contacts},
		{Type: DHTNodes, TxID: 3},
		{Type: DHTNodes, TxID: 4, Contacts: full},
		{Type: DHTFindValue, TxID: 5, Sender: v4, Target: NodeID{0xaa}},
		{Type: DHTValue, TxID: 5, Records: []ProviderRecord{dhtTestRecord(1, v4), dhtTestRecord(2, netip.AddrPort{})}, Contacts: contacts[:2]},
		{Type: DHTValue, TxID: 6, Records: recs, Contacts: full},
		{Type: DHTStore, TxID: 7, Sender: v4, Record: dhtTestRecord(3, v4)},
		{Type: DHTStored, TxID: 7, Status: StoreFull},
		{Type: DHTFindPeer, TxID: 8, Sender: v4, Peer: peer},
		{Type: DHTFoundPeer, TxID: 8, Found: DBFoundPeer{Peers: []DBPeer{peer, peer2}}},
		{Type: DHTDescriptorRequest, TxID: 9, Sender: v6},
		{Type: DHTDescriptorRequest, TxID: 10},
		{Type: DHTDescriptor, TxID: 9, Descriptor: dhtTestDescriptor(1, v4, v6)},
		{Type: DHTDescriptor, TxID: 10, Descriptor: dhtTestDescriptor(2)},
	}
}

func TestDHTRoundTrip(t *testing.T) {
	for _, m := range dhtTestMessages() {
		t.Run(m.Type.String(), func(t *testing.T) {
			if err := m.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			b := m.Append(nil)
			if len(b) != m.Len() {
				t.Fatalf("Len %d, encoded %d", m.Len(), len(b))
			}
			if len(b) > MaxDHTMessage {
				t.Fatalf("encoded %d bytes > %d", len(b), MaxDHTMessage)
			}
			got, err := ParseDHTMessage(b)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got.Type != m.Type || got.TxID != m.TxID || got.Sender != m.Sender || got.Target != m.Target ||
				len(got.Contacts) != len(m.Contacts) || len(got.Records) != len(m.Records) || got.Status != m.Status {
				t.Fatalf("parsed %+v, want %+v", got, m)
			}
			for i := range m.Contacts {
				if got.Contacts[i] != m.Contacts[i] {
					t.Fatalf("contact %d: %v, want %v", i, got.Contacts[i], m.Contacts[i])
				}
			}
			for _, r := range got.Records {
				if err := r.Verify(dhtTestNow); err != nil {
					t.Fatalf("parsed record does not verify: %v", err)
				}
			}
			if m.Type == DHTStore {
				if err := got.Record.Verify(dhtTestNow); err != nil {
					t.Fatalf("parsed record does not verify: %v", err)
				}
			}
			if m.Type == DHTDescriptor {
				if err := got.Descriptor.Verify(dhtTestNow); err != nil || got.Descriptor.ID != m.Descriptor.ID {
					t.Fatalf("parsed descriptor of %v does not verify: %v", got.Descriptor.ID, err)
				}
			}
			if again := got.Append(nil); !bytes.Equal(again, b) {
				t.Fatalf("re-encoding differs")
			}
		})
	}
}

func TestDHTTruncated(t *testing.T) {
	for _, m := range dhtTestMessages() {
		b := m.Append(nil)
		for n := range len(b) {
			if _, err := ParseDHTMessage(b[:n]); err == nil {
				t.Errorf("%v: prefix of %d/%d bytes parsed", m.Type, n, len(b))
			}
		}
		if _, err := ParseDHTMessage(append(b, 0)); !errors.Is(err, ErrTrailing) && m.Type != DHTFindPeer && m.Type != DHTFoundPeer {
			t.Errorf("%v: trailing byte: %v, want ErrTrailing", m.Type, err)
		} else if err == nil {
			t.Errorf("%v: trailing byte accepted", m.Type)
		}
	}
	rec := dhtTestRecord(5, netip.MustParseAddrPort("[::1]:1")).Append(nil)
	for n := range len(rec) {
		if _, err := ParseProviderRecord(rec[:n]); err == nil {
			t.Errorf("record prefix of %d/%d bytes parsed", n, len(rec))
		}
	}
	if len(rec) != MaxProviderRecord {
		t.Errorf("IPv6 record is %d bytes, MaxProviderRecord %d", len(rec), MaxProviderRecord)
	}
}

func TestDHTBad(t *testing.T) {
	ping := DHTMessage{Type: DHTPing, TxID: 1}.Append(nil)
	nodes := DHTMessage{Type: DHTNodes, TxID: 1}.Append(nil)
	value := dhtTestMessages()[8].Append(nil)
	store := dhtTestMessages()[10].Append(nil)
	set := func(b []byte, i int, v byte) []byte { b = bytes.Clone(b); b[i] = v; return b }
	// A descriptor whose validity window is empty: it parses as bytes
	// but not as a descriptor.
	bd := dhtTestDescriptor(3)
	bd.ValidUntil = bd.ValidAfter
	bd.Sign(dhtTestKey(3))
	badDesc := bd.Append(nil)
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"unknown type 0", set(ping, 0, 0), ErrUnknownCommand},
		{"unknown type 13", set(ping, 0, 13), ErrUnknownCommand},
		{"DESCRIPTOR without a descriptor", set(ping, 0, byte(DHTDescriptor))[:9], ErrTruncated},
		{"DESCRIPTOR with a bad descriptor", append(set(ping, 0, byte(DHTDescriptor))[:9], badDesc...), ErrBadValue},
		{"unknown type 255", set(ping, 0, 255), ErrUnknownCommand},
		{"bad IP length", set(ping, 9, 5), ErrBadLength},
		{"too many contacts", set(nodes, 9, MaxDHTContacts+1), ErrTooLong},
		{"contacts beyond the message", set(nodes, 9, 3), ErrTruncated},
		{"zero records in VALUE", set(value, 9, 0), ErrBadValue},
		{"too many records", set(value, 9, MaxDHTRecords+1), ErrBadValue},
		{"oversized record", set(store, 16, MaxProviderRecord+1), ErrTooLong},
		{"stored status", append(DHTMessage{Type: DHTStored, TxID: 1}.Append(nil)[:9], 3), ErrBadValue},
		{"over MaxDHTMessage", make([]byte, MaxDHTMessage+1), ErrTooLong},
	}
	for _, c := range cases {
		if _, err := ParseDHTMessage(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// P and F out of range inside a record.
	rec := dhtTestRecord(1, netip.AddrPort{})
	b := rec.Append(nil)
	off := 2*IDSize + OnionKeySize + 1
	if _, err := ParseProviderRecord(set(b, off, MaxPieces+1)); !errors.Is(err, ErrBadValue) {
		t.Errorf("P > 3: %v", err)
	}
	if _, err := ParseProviderRecord(set(b, off+1, 2)); !errors.Is(err, ErrBadValue) {
		t.Errorf("F = 2: %v", err)
	}
	if err := (DHTMessage{Type: 99}).Validate(); !errors.Is(err, ErrUnknownCommand) {
		t.Errorf("Validate unknown type: %v", err)
	}
}

func TestProviderRecordVerify(t *testing.T) {
	good := dhtTestRecord(4, netip.MustParseAddrPort("127.0.0.1:1"))
	if err := good.Verify(dhtTestNow); err != nil {
		t.Fatalf("good record: %v", err)
	}
	tampered := good
	tampered.Pieces = 3
	other := good
	other.ORDB = NodeID{1}
	unsigned := good
	unsigned.Signature = make([]byte, SignatureSize)
	short := good
	short.Signature = nil
	cases := []struct {
		name string
		r    ProviderRecord
		now  time.Time
		want error
	}{
		{"tampered", tampered, dhtTestNow, ErrRecordSignature},
		{"about someone else", other, dhtTestNow, ErrRecordOwner},
		{"unsigned", unsigned, dhtTestNow, ErrRecordSignature},
		{"no signature", short, dhtTestNow, ErrBadLength},
		{"expired", good, time.Unix(int64(good.Expires), 0), ErrRecordExpired},
	}
	for _, c := range cases {
		if err := c.r.Verify(c.now); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// The domain string keeps a record signature from being valid as
	// anything else, and vice versa.
	if !strings.HasPrefix(string(good.SignedBytes()), recordDomain) {
		t.Errorf("signed bytes lack the domain prefix")
	}
}

func FuzzDHTMessage(f *testing.F) {
	for _, m := range dhtTestMessages() {
		f.Add(m.Append(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseDHTMessage(b)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("parsed message does not validate: %v", err)
		}
		if m.Len() != len(b) {
			t.Fatalf("Len %d, input %d", m.Len(), len(b))
		}
		if again := m.Append(nil); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", again, b)
		}
	})
}

func FuzzProviderRecord(f *testing.F) {
	f.Add(dhtTestRecord(1, netip.AddrPort{}).Append(nil))
	f.Add(dhtTestRecord(2, netip.MustParseAddrPort("127.0.0.1:7700")).Append(nil))
	f.Add(dhtTestRecord(3, netip.MustParseAddrPort("[::1]:7700")).Append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseProviderRecord(b)
		if err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("parsed record does not validate: %v", err)
		}
		_ = r.Verify(dhtTestNow) // must not panic
		if r.Len() != len(b) {
			t.Fatalf("Len %d, input %d", r.Len(), len(b))
		}
		if again := r.Append(nil); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

// TestDHTDescriptorSize holds the DESCRIPTOR sizes the package doc draws.
func TestDHTDescriptorSize(t *testing.T) {
	v6 := netip.MustParseAddrPort("[::1]:1")
	small := DHTMessage{Type: DHTDescriptor, Descriptor: dhtTestDescriptor(1)}
	large := DHTMessage{Type: DHTDescriptor, Descriptor: dhtTestDescriptor(1, v6, v6, v6, v6)}
	if n := small.Descriptor.Len(); n != 167 {
		t.Errorf("descriptor without an address: %d bytes, doc says 167", n)
	}
	large.Descriptor.Flags |= FlagExit
	for i := range MaxExitPortRanges {
		large.Descriptor.ExitPorts = append(large.Descriptor.ExitPorts, PortRange{uint16(10*i + 1), uint16(10*i + 5)})
	}
	if n := large.Descriptor.Len(); n != 307 {
		t.Errorf("descriptor with four IPv6 addresses and %d exit port ranges: %d bytes, doc says 307", MaxExitPortRanges, n)
	}
	if err := large.Validate(); err != nil || large.Len() != dhtHeaderSize+307 {
		t.Errorf("largest DESCRIPTOR: %v, %d bytes", err, large.Len())
	}
}
