package kademlia

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"veil/proto"
)

func TestBucketIndex(t *testing.T) {
	self := proto.NodeID{0x80}
	cases := []struct {
		id   proto.NodeID
		want int
	}{
		{proto.NodeID{0x00}, 159},       // differs in the top bit: 2^159 <= d
		{proto.NodeID{0xc0}, 158},       // second bit
		{proto.NodeID{0x81}, 152},       // last bit of the first byte
		{proto.NodeID{0x80, 0x80}, 151}, // first bit of the second byte
		{proto.NodeID{0x80, 19: 1}, 0},  // d = 1
		{proto.NodeID{0x80, 19: 2}, 1},  // d = 2
		{proto.NodeID{0x80, 19: 3}, 1},  // d = 3
		{self, -1},                      // no bucket
	}
	for _, c := range cases {
		if got := BucketIndex(self, c.id); got != c.want {
			t.Errorf("BucketIndex(%x) = %d, want %d", c.id[:2], got, c.want)
		}
	}
	r := seedFrom(1)
	for i := range IDBits {
		id := RandomID(self, i, r)
		if got := BucketIndex(self, id); got != i {
			t.Fatalf("RandomID for bucket %d landed in %d", i, got)
		}
	}
}

func testTable(maxPerSubnet int) (*Table, Config) {
	cfg := DefaultConfig()
	cfg.MaxPerSubnet = maxPerSubnet
	return NewTable(proto.NodeID{}, cfg), cfg
}

func bucketIDs(t *Table, i int) []proto.NodeID {
	var ids []proto.NodeID
	for _, e := range t.Bucket(i) {
		ids = append(ids, e.Contact.ID)
	}
	return ids
}

func TestTableLRUAndEviction(t *testing.T) {
	tb, cfg := testTable(0)
	const b = 159
	var ids []proto.NodeID
	now := testNow
	for i := range cfg.K {
		id := idInBucket(tb.Self(), b, uint64(i))
		ids = append(ids, id)
		if _, ping, err := tb.Seen(contactAt(id, fmt.Sprintf("127.0.0.1:%d", 1000+i)), nil, now); err != nil || ping {
			t.Fatalf("adding %d: ping %v err %v", i, ping, err)
		}
	}
	if !slices.Equal(bucketIDs(tb, b), ids) {
		t.Fatalf("bucket order is not insertion order")
	}
	// Seeing the oldest again moves it to the tail.
	tb.Seen(contactAt(ids[0], "127.0.0.1:1000"), nil, now)
	want := append(slices.Clone(ids[1:]), ids[0])
	if !slices.Equal(bucketIDs(tb, b), want) {
		t.Fatalf("seen contact did not move to the tail")
	}
	// A newcomer while the oldest is fresh: dropped, no ping.
	newcomer := idInBucket(tb.Self(), b, 100)
	if _, ping, err := tb.Seen(contactAt(newcomer, "127.0.0.1:2000"), nil, now.Add(time.Second)); !errors.Is(err, ErrBucketFull) || ping {
		t.Fatalf("newcomer with fresh oldest: ping %v err %v", ping, err)
	}
	// Once the oldest is stale, a newcomer triggers a ping of it.
	later := now.Add(cfg.PingAfter + time.Second)
	oldest, ping, err := tb.Seen(contactAt(newcomer, "127.0.0.1:2000"), nil, later)
	if err != nil || !ping || oldest.ID != want[0] {
		t.Fatalf("stale oldest: got ping %v of %v, err %v; want ping of %v", ping, oldest.ID.Short(), err, want[0].Short())
	}
	// It answers: it stays (now most recent), the newcomer is dropped.
	tb.Seen(oldest, nil, later)
	if _, ok := tb.Get(newcomer); ok {
		t.Fatalf("newcomer added although the oldest answered")
	}
	want = append(slices.Clone(want[1:]), want[0])
	if !slices.Equal(bucketIDs(tb, b), want) {
		t.Fatalf("order after ping answer: wrong")
	}
	// Next newcomer, the (new) oldest is stale and its ping fails: the
	// newcomer replaces it at the tail.
	later = later.Add(cfg.PingAfter + time.Second)
	oldest, ping, _ = tb.Seen(contactAt(newcomer, "127.0.0.1:2000"), nil, later)
	if !ping || oldest.ID != want[0] {
		t.Fatalf("second ping: %v %v", ping, oldest.ID.Short())
	}
	if !tb.Failed(oldest.ID) {
		t.Fatalf("failed ping did not evict")
	}
	want = append(slices.Clone(want[1:]), newcomer)
	if !slices.Equal(bucketIDs(tb, b), want) || tb.Len() != cfg.K {
		t.Fatalf("eviction: bucket %v", bucketIDs(tb, b))
	}
	// A contact missing MaxFails RPCs leaves; fewer do not.
	for i := 1; i < cfg.MaxFails; i++ {
		if tb.Failed(want[3]) {
			t.Fatalf("removed after %d failure(s)", i)
		}
	}
	if !tb.Failed(want[3]) || tb.Len() != cfg.K-1 {
		t.Fatalf("not removed after MaxFails")
	}
}

func TestTableRejects(t *testing.T) {
	tb, _ := testTable(2)
	if _, _, err := tb.Seen(proto.DHTContact{ID: tb.Self(), Addr: contactAt(proto.NodeID{}, "127.0.0.1:1").Addr}, nil, testNow); !errors.Is(err, ErrSelf) {
		t.Errorf("self: %v", err)
	}
	if _, _, err := tb.Seen(proto.DHTContact{ID: proto.NodeID{1}}, nil, testNow); !errors.Is(err, ErrNoAddr) {
		t.Errorf("no address: %v", err)
	}
	if tb.Len() != 0 {
		t.Errorf("rejected contacts were added")
	}
}

func TestTableSubnetLimit(t *testing.T) {
	cases := []struct {
		name   string
		limit  int
		addrs  []string
		wantIn int
	}{
		{"ipv4 same /24", 2, []string{"10.1.2.3:1", "10.1.2.4:1", "10.1.2.5:1", "10.1.2.6:1"}, 2},
		{"ipv4 different /24", 2, []string{"10.1.2.3:1", "10.1.3.3:1", "10.1.4.3:1"}, 3},
		{"ipv4-mapped counts as ipv4", 2, []string{"10.1.2.3:1", "[::ffff:10.1.2.4]:1", "10.1.2.5:1"}, 2},
		{"ipv6 same /48", 2, []string{"[2001:db8:1::1]:1", "[2001:db8:1:2::1]:1", "[2001:db8:1:3::1]:1"}, 2},
		{"ipv6 different /48", 2, []string{"[2001:db8:1::1]:1", "[2001:db8:2::1]:1", "[2001:db8:3::1]:1"}, 3},
		{"limit off", 0, []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"}, 4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tb, _ := testTable(c.limit)
			for i, a := range c.addrs {
				_, _, err := tb.Seen(contactAt(idInBucket(tb.Self(), 159, uint64(i)), a), nil, testNow)
				if i >= c.wantIn && !errors.Is(err, ErrSubnetFull) {
					t.Errorf("%s: %v, want ErrSubnetFull", a, err)
				}
			}
			if tb.Len() != c.wantIn {
				t.Errorf("%d in table, want %d", tb.Len(), c.wantIn)
			}
		})
	}
	// The limit is per bucket: the same /24 may fill two in each bucket.
	tb, _ := testTable(2)
	for i := range 6 {
		tb.Seen(contactAt(idInBucket(tb.Self(), 159-i/2, uint64(i)), fmt.Sprintf("10.0.0.%d:1", i)), nil, testNow)
	}
	if tb.Len() != 6 {
		t.Errorf("per-bucket limit: %d in table, want 6", tb.Len())
	}
}

func TestTableClosestMatchesBruteForce(t *testing.T) {
	r := seedFrom(3)
	cfg := DefaultConfig()
	cfg.MaxPerSubnet = 0
	self := RandomID(proto.NodeID{}, 159, r)
	tb := NewTable(self, cfg)
	var all []proto.NodeID
	for i := range 2000 {
		// Bias towards self so deep buckets fill too.
		id := RandomID(self, 159-r.IntN(20), r)
		if _, _, err := tb.Seen(contactAt(id, "127.0.0.1:1"), nil, testNow); err == nil {
			all = append(all, id)
		}
		_ = i
	}
	if tb.Len() != len(all) {
		t.Fatalf("Len %d, added %d", tb.Len(), len(all))
	}
	for range 300 {
		target := RandomID(self, 159-r.IntN(25), r)
		if r.IntN(10) == 0 {
			target = self
		}
		n := 1 + r.IntN(20)
		want := slices.Clone(all)
		slices.SortFunc(want, func(a, b proto.NodeID) int {
			if proto.Closer(target, a, b) {
				return -1
			}
			return 1
		})
		want = want[:min(n, len(want))]
		var got []proto.NodeID
		for _, c := range tb.ClosestContacts(target, n, proto.NodeID{}) {
			got = append(got, c.ID)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("Closest(%v, %d) differs from brute force", target.Short(), n)
		}
	}
	// exclude leaves out one ID.
	ex := all[0]
	for _, c := range tb.ClosestContacts(ex, 8, ex) {
		if c.ID == ex {
			t.Fatalf("excluded ID returned")
		}
	}
}

func TestTableRefresh(t *testing.T) {
	tb, cfg := testTable(0)
	if due := tb.DueRefresh(testNow, cfg.RefreshInterval); len(due) != 0 {
		t.Fatalf("first call: %v due", due)
	}
	tb.Seen(contactAt(idInBucket(tb.Self(), 150, 1), "127.0.0.1:1"), nil, testNow)
	tb.DueRefresh(testNow, cfg.RefreshInterval) // start the clocks of the new buckets
	tb.MarkLookup(idInBucket(tb.Self(), 155, 2), testNow.Add(30*time.Minute))
	due := tb.DueRefresh(testNow.Add(cfg.RefreshInterval), cfg.RefreshInterval)
	// Buckets 159..149 (one below the nearest non-empty), minus 155 looked up.
	var want []int
	for i := 159; i >= 149; i-- {
		if i != 155 {
			want = append(want, i)
		}
	}
	if !slices.Equal(due, want) {
		t.Fatalf("due %v, want %v", due, want)
	}
	if again := tb.DueRefresh(testNow.Add(cfg.RefreshInterval), cfg.RefreshInterval); len(again) != 0 {
		t.Fatalf("refreshed buckets due again at once: %v", again)
	}
	// JoinRefresh: every non-full bucket farther than the nearest one.
	if jr := tb.JoinRefresh(testNow); !slices.Equal(jr, []int{159, 158, 157, 156, 155, 154, 153, 152, 151}) {
		t.Fatalf("JoinRefresh %v", jr)
	}
}

// The contact pinged for eviction may be heard from by other traffic
// before its pong: that too settles the ping, and the next newcomer gets
// a ping of its own.
func TestTablePingTargetSeenElsewhere(t *testing.T) {
	tb, cfg := testTable(0)
	var ids []proto.NodeID
	for i := range cfg.K {
		id := idInBucket(tb.Self(), 159, uint64(i))
		ids = append(ids, id)
		tb.Seen(contactAt(id, "127.0.0.1:1"), nil, testNow)
	}
	later := testNow.Add(cfg.PingAfter + time.Second)
	oldest, ping, _ := tb.Seen(contactAt(idInBucket(tb.Self(), 159, 100), "127.0.0.1:2"), nil, later)
	if !ping || oldest.ID != ids[0] {
		t.Fatal("no ping")
	}
	tb.Seen(contactAt(ids[0], "127.0.0.1:1"), nil, later) // heard from: settles the ping
	much := later.Add(cfg.PingAfter + time.Second)
	oldest, ping, _ = tb.Seen(contactAt(idInBucket(tb.Self(), 159, 101), "127.0.0.1:3"), nil, much)
	if !ping || oldest.ID != ids[1] {
		t.Fatalf("second newcomer: ping %v of %v, want a ping of %v", ping, oldest.ID.Short(), ids[1].Short())
	}
}

// TestTableOnionKeys: the onion keys of contacts that introduced
// themselves are kept beside the slots (which hold no pointer); each
// contact keeps its own through updates, evictions and replacements, and
// a key freed by a contact leaving is reused, not leaked.
func TestTableOnionKeys(t *testing.T) {
	tb, cfg := testTable(0)
	const b = 159
	key := func(i int) []byte {
		k := make([]byte, 32)
		k[0], k[31] = byte(i), byte(i>>8)
		return k
	}
	check := func(id proto.NodeID, want []byte) {
		t.Helper()
		e, ok := tb.Get(id)
		if !ok || !slices.Equal(e.OnionKey, want) {
			t.Fatalf("%v: onion key %x (in table %v), want %x", id.Short(), e.OnionKey, ok, want)
		}
	}
	now := testNow
	var ids []proto.NodeID
	for i := range cfg.K {
		id := idInBucket(tb.Self(), b, uint64(i))
		ids = append(ids, id)
		var k []byte
		if i%2 == 0 {
			k = key(i)
		}
		if _, _, err := tb.Seen(contactAt(id, fmt.Sprintf("127.0.0.1:%d", 1000+i)), k, now); err != nil {
			t.Fatal(err)
		}
	}
	for i, id := range ids {
		var want []byte
		if i%2 == 0 {
			want = key(i)
		}
		check(id, want)
	}
	// A contact introducing itself later gets its key; one seen again
	// without a key keeps it; a new key replaces the old.
	tb.Seen(contactAt(ids[1], "127.0.0.1:1001"), key(101), now)
	tb.Seen(contactAt(ids[0], "127.0.0.1:1000"), nil, now)
	tb.Seen(contactAt(ids[2], "127.0.0.1:1002"), key(102), now)
	check(ids[1], key(101))
	check(ids[0], key(0))
	check(ids[2], key(102))
	held := len(tb.onions)
	// Contacts leave and come back many times: freed keys are reused.
	for round := range 50 {
		for _, i := range []int{0, 1, 2} {
			tb.Remove(ids[i])
		}
		for _, i := range []int{0, 1, 2} {
			tb.Seen(contactAt(ids[i], fmt.Sprintf("127.0.0.1:%d", 1000+i)), key(1000+round*3+i), now)
		}
		for _, i := range []int{0, 1, 2} {
			check(ids[i], key(1000+round*3+i))
		}
	}
	if len(tb.onions) > held+1 {
		t.Fatalf("%d onion keys stored for %d contacts that have one: freed keys not reused", len(tb.onions), held)
	}
	// A replacement brings its key in when the oldest fails its ping;
	// a replacement dropped (the oldest answered) frees its key.
	later := now.Add(cfg.PingAfter + time.Second)
	newcomer := idInBucket(tb.Self(), b, 100)
	oldest, ping, _ := tb.Seen(contactAt(newcomer, "127.0.0.1:2000"), key(200), later)
	if !ping {
		t.Fatal("no ping of the stale oldest")
	}
	tb.Failed(oldest.ID)
	check(newcomer, key(200))
	if _, ok := tb.Get(oldest.ID); ok {
		t.Fatal("oldest kept after its failed ping")
	}
	later = later.Add(cfg.PingAfter + time.Second)
	other := idInBucket(tb.Self(), b, 101)
	oldest, ping, _ = tb.Seen(contactAt(other, "127.0.0.1:2001"), key(201), later)
	if !ping {
		t.Fatal("no second ping")
	}
	before := len(tb.freeOnions)
	tb.Seen(oldest, nil, later)
	if _, ok := tb.Get(other); ok || len(tb.freeOnions) != before+1 {
		t.Fatalf("dropped replacement: in table %v, free keys %d -> %d", ok, before, len(tb.freeOnions))
	}
	// Closest hands out copies: changing one changes nothing held.
	for _, e := range tb.Closest(nil, newcomer, cfg.K, proto.NodeID{}) {
		if e.Contact.ID == newcomer {
			e.OnionKey[0] ^= 0xff
		}
	}
	check(newcomer, key(200))
}
