package kademlia

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"veil/proto"
)

func testRecord(id Identity, key proto.HashName, expires time.Time) proto.ProviderRecord {
	r := proto.ProviderRecord{Key: key, OnionKey: id.OnionKey, Addr: id.Addr, Pieces: 3, Expires: uint64(expires.Unix())}
	r.Sign(id.Key)
	return r
}

func TestStoreRejects(t *testing.T) {
	cfg := DefaultConfig()
	a, b := testIdentity(t, 1), testIdentity(t, 2)
	key := proto.HashName{9}
	good := testRecord(a, key, testNow.Add(time.Hour))

	unsigned := good
	unsigned.Signature = nil
	zeroSig := good
	zeroSig.Signature = make([]byte, proto.SignatureSize)
	tampered := good
	tampered.Pieces = 1
	wrongKey := good // ORDB ID of b, signed by a
	wrongKey.ORDB = b.ID
	long := testRecord(a, key, testNow.Add(cfg.MaxRecordTTL+time.Hour))
	older := testRecord(a, key, testNow.Add(time.Minute))

	cases := []struct {
		name string
		from proto.NodeID
		r    proto.ProviderRecord
		want error
	}{
		{"unsigned", a.ID, unsigned, proto.ErrBadLength},
		{"zero signature", a.ID, zeroSig, proto.ErrRecordSignature},
		{"tampered", a.ID, tampered, proto.ErrRecordSignature},
		{"about someone else (sender)", b.ID, good, ErrNotOwner},
		{"about someone else (key)", b.ID, wrongKey, proto.ErrRecordOwner},
		{"expired", a.ID, testRecord(a, key, testNow), proto.ErrRecordExpired},
		{"TTL too long", a.ID, long, ErrTTLTooLong},
	}
	s := NewStore(cfg)
	if err := s.Put(a.ID, loopback, good, testNow); err != nil {
		t.Fatalf("good record: %v", err)
	}
	before := s.Get(key, testNow, 16)
	for _, c := range cases {
		if err := s.Put(c.from, loopback, c.r, testNow); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if err := s.Put(a.ID, loopback, older, testNow); !errors.Is(err, ErrStale) {
		t.Errorf("older record: %v, want ErrStale", err)
	}
	after := s.Get(key, testNow, 16)
	if s.Len() != 1 || len(after) != 1 || !slices.Equal(after[0].Signature, before[0].Signature) || after[0].Expires != good.Expires {
		t.Fatalf("rejected records changed the store: %d records", s.Len())
	}
}

func TestStoreLimitsAndExpiry(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxRecords, cfg.MaxRecordsPerKey = 3, 2
	s := NewStore(cfg)
	ids := []Identity{testIdentity(t, 1), testIdentity(t, 2), testIdentity(t, 3), testIdentity(t, 4)}
	nets := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("2001:db8::1")}
	k1, k2 := proto.HashName{1}, proto.HashName{2}
	put := func(i int, k proto.HashName, ttl time.Duration) error {
		return s.Put(ids[i].ID, nets[i], testRecord(ids[i], k, testNow.Add(ttl)), testNow)
	}
	holders := func(k proto.HashName, at time.Time) (out []proto.NodeID) {
		for _, r := range s.Get(k, at, 16) {
			out = append(out, r.ORDB)
		}
		return out
	}
	if err := put(0, k1, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := put(1, k1, time.Minute); err != nil {
		t.Fatal(err)
	}
	// A third record for a full key evicts the oldest (all subnets tie).
	if err := put(2, k1, time.Hour); err != nil {
		t.Fatalf("third record for one key: %v", err)
	}
	if got := holders(k1, testNow); len(got) != 2 || slices.Contains(got, ids[0].ID) {
		t.Fatalf("after eviction k1 is held by %v", got)
	}
	if err := put(3, k2, time.Hour); err != nil {
		t.Fatal(err)
	}
	// The store is full (3): a newcomer evicts the oldest record there.
	if err := put(0, k2, time.Hour); err != nil || s.Len() != 3 {
		t.Fatalf("newcomer to a full store: %v (%d records)", err, s.Len())
	}
	// A newer record of a known provider replaces it in place.
	if err := put(3, k2, 2*time.Hour); err != nil || s.Len() != 3 {
		t.Fatalf("refresh: %v (%d records)", err, s.Len())
	}
	later := testNow.Add(2 * time.Minute)
	if got := s.Get(k1, later, 16); len(got) != 1 || got[0].ORDB != ids[2].ID {
		t.Fatalf("Get skips expired records: %v", got)
	}
	if n := s.Expire(testNow.Add(3 * time.Hour)); n != 3 || s.Len() != 0 || len(s.subnets) != 0 || len(s.senders) != 0 {
		t.Fatalf("Expire dropped %d, %d left, %d subnets and %d senders counted", n, s.Len(), len(s.subnets), len(s.senders))
	}
}

func TestStoreCopiesRecord(t *testing.T) {
	s := NewStore(DefaultConfig())
	a := testIdentity(t, 1)
	buf := testRecord(a, proto.HashName{1}, testNow.Add(time.Hour)).Append(nil)
	r, err := proto.ParseProviderRecord(buf)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(a.ID, loopback, r, testNow); err != nil {
		t.Fatal(err)
	}
	clear(buf) // the parse buffer is reused by the caller
	if got := s.Get(proto.HashName{1}, testNow, 1); len(got) != 1 || got[0].Verify(testNow) != nil {
		t.Fatalf("stored record aliased the parse buffer")
	}
}
