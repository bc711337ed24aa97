package node

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"

	"veil/circuits"
	"veil/kademlia"
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

func TestDescExchange(t *testing.T) {
	id, d := testDescriptor(t)
	// The request says where the asker accepts links; a client's says
	// nothing.
	req := descRequest(d)
	if req.Type != proto.DHTDescriptorRequest || req.Sender != d.Addrs[0] {
		t.Fatalf("request %+v", req)
	}
	if c := descRequest(proto.NodeDescriptor{}); c.Sender.IsValid() {
		t.Fatalf("a client's request gives an address: %v", c.Sender)
	}
	got, err := proto.ParseDHTMessage(req.Append(nil))
	if err != nil || !isDescMsg(got) || got.TxID != req.TxID {
		t.Fatalf("request round trip: %+v, %v", got, err)
	}
	// The answer repeats the request's transaction and carries our own.
	b := descAnswer(got, d).Append(nil)
	ans, err := proto.ParseDHTMessage(b)
	if err != nil || !isDescMsg(ans) || ans.TxID != req.TxID {
		t.Fatalf("answer round trip: %+v, %v", ans, err)
	}
	pd, err := peerDescriptor(ans, id.ID)
	if err != nil || !bytes.Equal(pd.Append(nil), d.Append(nil)) {
		t.Fatalf("peer descriptor: %v", err)
	}
	// The directory keeps it, so it must not alias the link's buffer.
	clear(b)
	if err := pd.Verify(time.Unix(int64(d.ValidAfter), 0)); err != nil {
		t.Fatalf("descriptor changed with the received buffer: %v", err)
	}
	// A node vouches only for itself.
	other, _ := testDescriptor(t)
	if _, err := peerDescriptor(ans, other.ID); !errors.Is(err, errDescPeer) {
		t.Fatalf("descriptor of another node: %v", err)
	}
	ping := proto.DHTMessage{Type: proto.DHTPing, TxID: 1}
	if isDescMsg(ping) {
		t.Fatal("PING taken for the descriptor exchange")
	}
	if _, err := peerDescriptor(req, id.ID); err == nil {
		t.Fatal("a request taken for an answer")
	}
}

// TestDescIDWork: a descriptor is taken into the directory only when its
// ID solves the ID puzzle.
func TestDescIDWork(t *testing.T) {
	cheap, d := testDescriptor(t) // an ephemeral identity: no work done
	for proto.IDWorkOK(cheap.ID, proto.IDWorkBits) {
		cheap, d = testDescriptor(t) // one in 4,096 solves it by chance
	}
	now := time.Unix(int64(d.ValidAfter), 0)
	ans := descAnswer(descRequest(d), d)
	if _, err := acceptDescriptor(ans, cheap.ID, now); !errors.Is(err, kademlia.ErrIDWork) {
		t.Fatalf("descriptor of an ID without work: %v", err)
	}
	worked, err := circuits.LoadOrCreateIdentity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	wd, err := worked.Descriptor([]netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:7700")}, proto.FlagRelay, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acceptDescriptor(descAnswer(descRequest(wd), wd), worked.ID, time.Unix(int64(wd.ValidAfter), 0)); err != nil {
		t.Fatalf("descriptor of a node that did the work: %v", err)
	}
}

func FuzzDescAnswer(f *testing.F) {
	id, d := testDescriptor(f)
	req := descRequest(d)
	f.Add(req.Append(nil))
	f.Add(descAnswer(req, d).Append(nil))
	f.Add(proto.DHTMessage{Type: proto.DHTPing, TxID: 1}.Append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := proto.ParseDHTMessage(b)
		if err != nil {
			return
		}
		got, err := peerDescriptor(m, id.ID)
		if err != nil {
			return
		}
		// What is taken names the peer and is what the peer sent.
		if got.ID != id.ID || !bytes.Equal(descAnswer(m, got).Append(nil), b) {
			t.Fatalf("%x: taken differently", b)
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
