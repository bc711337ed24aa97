package node

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"

	"veil/circuits"
	"veil/proto"
)

func testDescriptor(t testing.TB) (*circuits.Identity, proto.NodeDescriptor) {
	id, err := circuits.NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	d, err := id.Descriptor([]netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:7700")}, proto.FlagRelay|proto.FlagORDB, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return id, d
}

func TestDescAnswer(t *testing.T) {
	id, d := testDescriptor(t)
	b := appendDescAnswer(nil, d)
	if !isDescMsg(b) || !isDescMsg([]byte{descRequest}) || isDescMsg([]byte{byte(proto.DHTPing)}) || isDescMsg(nil) {
		t.Fatal("isDescMsg")
	}
	got, err := parseDescAnswer(b, id.ID)
	if err != nil || !bytes.Equal(got.Append(nil), d.Append(nil)) {
		t.Fatalf("round trip: %v", err)
	}
	// A node vouches only for itself.
	other, _ := testDescriptor(t)
	if _, err := parseDescAnswer(b, other.ID); !errors.Is(err, errDescPeer) {
		t.Fatalf("descriptor of another node: %v", err)
	}
	// Every truncation is an error.
	for i := range b {
		if _, err := parseDescAnswer(b[:i], id.ID); err == nil {
			t.Fatalf("truncated at %d accepted", i)
		}
	}
}

func FuzzDescAnswer(f *testing.F) {
	id, d := testDescriptor(f)
	f.Add(appendDescAnswer(nil, d))
	f.Add([]byte{descRequest})
	f.Add([]byte{descAnswer})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := parseDescAnswer(b, id.ID)
		if err != nil {
			return
		}
		// What parses re-encodes to the same bytes and names the peer.
		if got.ID != id.ID || !bytes.Equal(appendDescAnswer(nil, got), b) {
			t.Fatalf("%x: re-encodes differently", b)
		}
	})
}

func TestDirectory(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	dir := newDirectory(func() time.Time { return now })
	_, d := testDescriptor(t)
	if !dir.shouldAsk(d.ID) || dir.shouldAsk(d.ID) {
		t.Fatal("a peer is asked once per interval")
	}
	now = now.Add(31 * time.Second)
	if !dir.shouldAsk(d.ID) {
		t.Fatal("asked again after the interval")
	}
	// Descriptors hold for their validity window only.
	now = time.Unix(int64(d.ValidAfter), 0)
	dir.Add(d)
	if _, ok := dir.Get(d.ID); !ok || len(dir.Nodes()) != 1 {
		t.Fatal("descriptor not kept")
	}
	if dir.shouldAsk(d.ID) {
		t.Fatal("a fresh descriptor is asked again")
	}
	now = time.Unix(int64(d.ValidUntil), 0).Add(-30 * time.Minute)
	if !dir.shouldAsk(d.ID) {
		t.Fatal("a descriptor about to expire is not asked again")
	}
	// A node whose link died leaves paths until it speaks again or
	// downFor passes.
	dir.Down(d.ID)
	if len(dir.Nodes()) != 0 {
		t.Fatal("a node seen going down is still offered")
	}
	dir.Up(d.ID)
	if len(dir.Nodes()) != 1 {
		t.Fatal("a node back up is not offered")
	}
	dir.Down(d.ID)
	now = now.Add(downFor)
	if len(dir.Nodes()) != 1 {
		t.Fatal("a node down long ago is not offered again")
	}
	older := d
	older.ValidAfter--
	dir.Add(older)
	if got, _ := dir.Get(d.ID); got.ValidAfter != d.ValidAfter {
		t.Fatal("an older descriptor replaced a newer one")
	}
	now = time.Unix(int64(d.ValidUntil), 0)
	if _, ok := dir.Get(d.ID); ok || len(dir.Nodes()) != 0 {
		t.Fatal("expired descriptor still used")
	}
}
