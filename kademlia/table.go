package kademlia

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"veil/proto"
)

// Entry is one contact of the routing table.
type Entry struct {
	Contact  proto.DHTContact
	OnionKey []byte // known when the contact introduced itself (FIND_PEER); else nil
	LastSeen time.Time
	Fails    int // RPCs missed in a row
}

// slot is an Entry as a bucket keeps it: 56 bytes instead of 112 (a
// netip.AddrPort alone is 32), which is most of a node's memory in a
// 100,000-node simulation. It holds no pointer, so the garbage collector
// never scans a bucket's entries.
type slot struct {
	id       proto.NodeID
	ip       [16]byte
	port     uint16
	is4      bool
	fails    uint8
	onion    int32 // 1 + the index of its onion key in Table.onions; 0 if the contact never introduced itself
	lastSeen int64 // unix nanoseconds
}

// toSlot is e as a slot, without its onion key (see Table.setOnion).
func toSlot(e Entry) slot {
	s := slot{id: e.Contact.ID, port: e.Contact.Addr.Port(), fails: uint8(min(e.Fails, 255)), lastSeen: e.LastSeen.UnixNano()}
	a := e.Contact.Addr.Addr().Unmap()
	s.ip, s.is4 = a.As16(), a.Is4()
	return s
}

func (s *slot) addr() netip.AddrPort {
	a := netip.AddrFrom16(s.ip)
	if s.is4 {
		a = a.Unmap()
	}
	return netip.AddrPortFrom(a, s.port)
}

func (s *slot) contact() proto.DHTContact { return proto.DHTContact{ID: s.id, Addr: s.addr()} }

func (t *Table) entry(s *slot) Entry {
	e := Entry{Contact: s.contact(), LastSeen: time.Unix(0, s.lastSeen), Fails: int(s.fails)}
	if s.onion != 0 {
		e.OnionKey = slices.Clone(t.onions[s.onion-1][:])
	}
	return e
}

// setOnion keeps key (if it is an onion key) as s's.
func (t *Table) setOnion(s *slot, key []byte) {
	if len(key) != 32 {
		return
	}
	if s.onion == 0 {
		if n := len(t.freeOnions); n > 0 {
			s.onion = t.freeOnions[n-1]
			t.freeOnions = t.freeOnions[:n-1]
		} else {
			t.onions = append(t.onions, [32]byte{})
			s.onion = int32(len(t.onions))
		}
	}
	t.onions[s.onion-1] = [32]byte(key)
}

// dropOnion frees the onion key of a slot leaving the table.
func (t *Table) dropOnion(s *slot) {
	if s.onion != 0 {
		t.freeOnions = append(t.freeOnions, s.onion)
		s.onion = 0
	}
}

// newSlot is e as a slot, with its onion key.
func (t *Table) newSlot(e Entry) slot {
	s := toSlot(e)
	t.setOnion(&s, e.OnionKey)
	return s
}

type bucket struct {
	entries     []slot       // least recently seen first
	replacement *slot        // waits for the ping of pingTarget
	pinging     bool         // a ping of pingTarget is in flight
	pingTarget  proto.NodeID // the oldest contact when the ping went out
	lastLookup  int64        // unix nanoseconds; 0: never
}

// Table is the routing table: IDBits buckets where bucket j holds contacts
// at XOR distance d with 2^j <= d < 2^(j+1) (the Peersm specification's
// numbering), each at most K long, least recently seen first. It is a pure
// data structure: the caller sends the pings it asks for and reports their
// outcome. Not safe for concurrent use.
type Table struct {
	self         proto.NodeID
	k            int
	maxPerSubnet int
	maxFails     int
	pingAfter    time.Duration
	// buckets[p] is bucket IDBits-1-p (contacts sharing a p-bit prefix
	// with self). Only the first few are ever filled in practice, so the
	// slice grows on demand: a table costs a few kB, not IDBits buckets.
	buckets []bucket
	size    int
	// onions are the onion keys of the contacts that introduced
	// themselves (slot.onion), kept apart so that slots hold no pointer;
	// freeOnions are the indexes of onions no slot uses.
	onions     [][32]byte
	freeOnions []int32
}

// at returns bucket i, or nil if it was never used.
func (t *Table) at(i int) *bucket {
	if p := IDBits - 1 - i; p < len(t.buckets) {
		return &t.buckets[p]
	}
	return nil
}

// grow returns bucket i, allocating it.
func (t *Table) grow(i int) *bucket {
	p := IDBits - 1 - i
	for len(t.buckets) <= p {
		t.buckets = append(t.buckets, bucket{})
	}
	return &t.buckets[p]
}

// NewTable returns an empty table for node self.
func NewTable(self proto.NodeID, cfg Config) *Table {
	return &Table{self: self, k: cfg.K, maxPerSubnet: cfg.MaxPerSubnet, maxFails: cfg.MaxFails, pingAfter: cfg.PingAfter}
}

// Self is the ID the table is built around.
func (t *Table) Self() proto.NodeID { return t.self }

// Len is the number of contacts held.
func (t *Table) Len() int { return t.size }

// BucketIndex returns j such that 2^j <= Xor(self, id) < 2^(j+1), or -1
// for self.
func BucketIndex(self, id proto.NodeID) int {
	return IDBits - 1 - proto.CommonPrefixLen(self, id)
}

// Bucket returns a copy of bucket i's entries, least recently seen first.
func (t *Table) Bucket(i int) []Entry {
	if b := t.at(i); b != nil {
		out := make([]Entry, len(b.entries))
		for k := range b.entries {
			out[k] = t.entry(&b.entries[k])
		}
		return out
	}
	return nil
}

// BucketLen is the number of contacts in bucket i.
func (t *Table) BucketLen(i int) int {
	if b := t.at(i); b != nil {
		return len(b.entries)
	}
	return 0
}

// subnet returns the /24 of an IPv4 address or the /48 of an IPv6 one.
func subnet(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 48
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p
}

func (t *Table) subnetCount(b *bucket, a netip.Addr, skip proto.NodeID) int {
	s := subnet(a)
	n := 0
	for k := range b.entries {
		e := &b.entries[k]
		if e.id != skip && s.Contains(e.addr().Addr()) {
			n++
		}
	}
	return n
}

// sameID compares IDs eight bytes at a time: the table's hot path.
func sameID(a, b *proto.NodeID) bool {
	return binary.LittleEndian.Uint64(a[0:8]) == binary.LittleEndian.Uint64(b[0:8]) &&
		binary.LittleEndian.Uint64(a[8:16]) == binary.LittleEndian.Uint64(b[8:16]) &&
		binary.LittleEndian.Uint32(a[16:20]) == binary.LittleEndian.Uint32(b[16:20])
}

func (t *Table) find(b *bucket, id proto.NodeID) int {
	for i := range b.entries {
		if sameID(&b.entries[i].id, &id) {
			return i
		}
	}
	return -1
}

// Seen records that c answered us or sent us a request at now. A known
// contact moves to the tail (most recently seen). A new one is added if
// its bucket has room and its subnet is under the limit. If the bucket is
// full and its oldest contact was seen within PingAfter, the newcomer is
// dropped (ErrBucketFull). Otherwise it waits as the bucket's replacement
// and Seen returns the oldest contact with ping = true: the caller pings it and reports
// Seen (it answered, the newcomer is dropped) or Failed (it is replaced).
// An error means the table did not change.
func (t *Table) Seen(c proto.DHTContact, onionKey []byte, now time.Time) (oldest proto.DHTContact, ping bool, err error) {
	if c.ID == t.self {
		return oldest, false, ErrSelf
	}
	if !c.Addr.IsValid() {
		return oldest, false, ErrNoAddr
	}
	b := t.grow(BucketIndex(t.self, c.ID))
	if i := t.find(b, c.ID); i >= 0 {
		e := b.entries[i]
		if e.addr() != c.Addr && (t.maxPerSubnet == 0 || t.subnetCount(b, c.Addr.Addr(), c.ID) < t.maxPerSubnet) {
			n := toSlot(Entry{Contact: c})
			e.ip, e.port, e.is4 = n.ip, n.port, n.is4
		}
		t.setOnion(&e, onionKey)
		e.lastSeen, e.fails = now.UnixNano(), 0
		copy(b.entries[i:], b.entries[i+1:])
		b.entries[len(b.entries)-1] = e
		if b.pinging && sameID(&b.pingTarget, &c.ID) {
			// The oldest answered its ping: it stays, the newcomer goes.
			b.pinging = false
			if b.replacement != nil {
				t.dropOnion(b.replacement)
				b.replacement = nil
			}
		}
		return oldest, false, nil
	}
	if t.maxPerSubnet > 0 && t.subnetCount(b, c.Addr.Addr(), proto.NodeID{}) >= t.maxPerSubnet {
		return oldest, false, ErrSubnetFull
	}
	if len(b.entries) < t.k {
		b.entries = append(b.entries, t.newSlot(Entry{Contact: c, OnionKey: onionKey, LastSeen: now}))
		t.size++
		return oldest, false, nil
	}
	if !b.pinging && now.UnixNano()-b.entries[0].lastSeen < int64(t.pingAfter) {
		// Even the oldest was heard from recently: it stays.
		return oldest, false, ErrBucketFull
	}
	if b.replacement != nil {
		t.dropOnion(b.replacement)
	}
	r := t.newSlot(Entry{Contact: c, OnionKey: onionKey, LastSeen: now})
	b.replacement = &r
	if b.pinging {
		// A ping is already out: the most recent newcomer waits instead.
		return oldest, false, ErrBucketFull
	}
	b.pinging, b.pingTarget = true, b.entries[0].id
	return b.entries[0].contact(), true, nil
}

// Failed records that an RPC to id went unanswered. A contact that missed
// MaxFails in a row, or the oldest contact whose eviction ping failed,
// leaves the table and the bucket's replacement, if any, takes its place.
// It reports whether id was removed.
func (t *Table) Failed(id proto.NodeID) bool {
	b, i := t.locate(id)
	if i < 0 {
		return false
	}
	if b.entries[i].fails < 255 {
		b.entries[i].fails++
	}
	if int(b.entries[i].fails) < t.maxFails && !(b.pinging && sameID(&b.pingTarget, &id)) {
		return false
	}
	t.removeAt(b, i)
	return true
}

// Remove drops id from the table, promoting the bucket's replacement.
func (t *Table) Remove(id proto.NodeID) bool {
	b, i := t.locate(id)
	if i < 0 {
		return false
	}
	t.removeAt(b, i)
	return true
}

func (t *Table) removeAt(b *bucket, i int) {
	t.dropOnion(&b.entries[i])
	b.entries = slices.Delete(b.entries, i, i+1)
	t.size--
	// The bucket has room now: whatever the ping in flight says, the
	// waiting newcomer can come in.
	b.pinging = false
	if r := b.replacement; r != nil {
		b.replacement = nil
		if t.maxPerSubnet == 0 || t.subnetCount(b, r.addr().Addr(), proto.NodeID{}) < t.maxPerSubnet {
			b.entries = append(b.entries, *r)
			t.size++
		} else {
			t.dropOnion(r)
		}
	}
}

// Get returns the entry for id.
func (t *Table) Get(id proto.NodeID) (Entry, bool) {
	if id == t.self {
		return Entry{}, false
	}
	if b := t.at(BucketIndex(t.self, id)); b != nil {
		if i := t.find(b, id); i >= 0 {
			return t.entry(&b.entries[i]), true
		}
	}
	return Entry{}, false
}

// Closest appends to dst up to n entries closest to target by XOR
// distance, closest first, skipping exclude. It visits buckets in distance
// order and sorts one bucket at a time: with b the bucket of target and D
// = self XOR target, bucket b holds the contacts closer than 2^b; among
// the buckets below b, bucket i's contacts are at distance D's bits above
// i, then !D_i, so those with D_i = 1 come first (from b-1 down) and those
// with D_i = 0 after (upwards); each bucket above b is one band of its
// own.
func (t *Table) Closest(dst []Entry, target proto.NodeID, n int, exclude proto.NodeID) []Entry {
	var buf [4 * 16]byDistance
	for _, c := range t.closest(buf[:0], target, n, exclude) {
		dst = append(dst, t.entry(c.e))
	}
	return dst
}

// ClosestContacts is Closest returning only the contacts.
func (t *Table) ClosestContacts(target proto.NodeID, n int, exclude proto.NodeID) []proto.DHTContact {
	return t.appendClosestContacts(nil, target, n, exclude)
}

// appendClosestContacts is ClosestContacts appending to dst; nil if there
// are none.
func (t *Table) appendClosestContacts(dst []proto.DHTContact, target proto.NodeID, n int, exclude proto.NodeID) []proto.DHTContact {
	var buf [4 * 16]byDistance
	found := t.closest(buf[:0], target, n, exclude)
	if len(found) == 0 {
		return nil
	}
	if dst == nil {
		dst = make([]proto.DHTContact, 0, len(found))
	}
	for _, c := range found {
		dst = append(dst, c.e.contact())
	}
	return dst
}

type byDistance struct {
	d0 uint64 // the first 8 bytes of the XOR distance to the target
	e  *slot
}

func (t *Table) closest(dst []byDistance, target proto.NodeID, n int, exclude proto.NodeID) []byDistance {
	if n <= 0 {
		return dst
	}
	b := BucketIndex(t.self, target)
	t0 := binary.BigEndian.Uint64(target[:8])
	// less orders by distance: the first 8 bytes decide but for IDs
	// sharing 64 bits.
	less := func(x, y *byDistance) bool {
		if x.d0 != y.d0 {
			return x.d0 < y.d0
		}
		dx, dy := proto.Xor(x.e.id, target), proto.Xor(y.e.id, target)
		return lessID(&dx, &dy)
	}
	// add appends bucket i in distance order and reports whether dst is
	// full.
	add := func(i int) bool {
		bk := t.at(i)
		if bk == nil {
			return false
		}
		from := len(dst)
		for k := range bk.entries {
			if e := &bk.entries[k]; !sameID(&e.id, &exclude) {
				dst = append(dst, byDistance{binary.BigEndian.Uint64(e.id[:8]) ^ t0, e})
			}
		}
		// Insertion sort: a bucket holds at most K (16) contacts.
		for x := from + 1; x < len(dst); x++ {
			for y := x; y > from && less(&dst[y], &dst[y-1]); y-- {
				dst[y], dst[y-1] = dst[y-1], dst[y]
			}
		}
		if len(dst) >= n {
			dst = dst[:n]
			return true
		}
		return false
	}
	low := IDBits - len(t.buckets) // the lowest bucket that may exist
	if b >= 0 {
		if add(b) {
			return dst
		}
		d := proto.Xor(t.self, target)
		bit := func(i int) bool { p := IDBits - 1 - i; return d[p/8]&(0x80>>(p%8)) != 0 }
		for i := b - 1; i >= max(low, 0); i-- {
			if bit(i) && add(i) {
				return dst
			}
		}
		for i := max(low, 0); i < b; i++ {
			if !bit(i) && add(i) {
				return dst
			}
		}
	}
	for i := max(b+1, low); i < IDBits; i++ {
		if add(i) {
			return dst
		}
	}
	return dst
}

// lessID compares IDs (or distances) as big-endian numbers, eight bytes
// at a time.
func lessID(a, b *proto.NodeID) bool {
	if x, y := binary.BigEndian.Uint64(a[0:8]), binary.BigEndian.Uint64(b[0:8]); x != y {
		return x < y
	}
	if x, y := binary.BigEndian.Uint64(a[8:16]), binary.BigEndian.Uint64(b[8:16]); x != y {
		return x < y
	}
	return binary.BigEndian.Uint32(a[16:20]) < binary.BigEndian.Uint32(b[16:20])
}

// cmpID is lessID as a three-way comparison.
func cmpID(a, b *proto.NodeID) int {
	for _, o := range [...]int{0, 8} {
		if x, y := binary.BigEndian.Uint64(a[o:o+8]), binary.BigEndian.Uint64(b[o:o+8]); x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	x, y := binary.BigEndian.Uint32(a[16:20]), binary.BigEndian.Uint32(b[16:20])
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// MarkLookup records a lookup of target at now, so target's bucket is not
// refreshed before RefreshInterval passes.
func (t *Table) MarkLookup(target proto.NodeID, now time.Time) {
	if i := BucketIndex(t.self, target); i >= 0 {
		t.grow(i).lastLookup = now.UnixNano()
	}
}

// DueRefresh returns the buckets with no lookup for interval, farthest
// first: every bucket from the farthest down to one below the nearest
// non-empty bucket (closer buckets are empty in any network of realistic
// size). A bucket never looked up counts from the first call. The buckets
// returned are marked as looked up at now.
func (t *Table) DueRefresh(now time.Time, interval time.Duration) []int {
	low := IDBits - 1
	for p := len(t.buckets) - 1; p >= 0; p-- {
		if len(t.buckets[p].entries) > 0 {
			low = max(IDBits-1-p-1, 0)
			break
		}
	}
	var due []int
	ns := now.UnixNano()
	for i := IDBits - 1; i >= low; i-- {
		b := t.grow(i)
		switch {
		case b.lastLookup == 0:
			b.lastLookup = ns
		case ns-b.lastLookup >= int64(interval):
			b.lastLookup = ns
			due = append(due, i)
		}
	}
	return due
}

// JoinRefresh returns the buckets a node refreshes once it has joined:
// every bucket farther than its nearest neighbour's that is not full
// (Kademlia section 2.3). Without it a newcomer knows almost nobody far from itself, and
// nobody far from it learns of it. They are marked as looked up at now.
func (t *Table) JoinRefresh(now time.Time) []int {
	var out []int
	for p := range t.buckets {
		if len(t.buckets[p].entries) > 0 {
			out = append(out, IDBits-1-p)
		}
	}
	if len(out) == 0 {
		return nil
	}
	nearest := out[len(out)-1]
	out = out[:0]
	for i := IDBits - 1; i > nearest; i-- {
		if b := t.grow(i); len(b.entries) < t.k {
			b.lastLookup = now.UnixNano()
			out = append(out, i)
		}
	}
	return out
}

// RandomID returns a random ID in bucket i of self's table.
func RandomID(self proto.NodeID, i int, r *rand.Rand) proto.NodeID {
	var id proto.NodeID
	for j := 0; j < len(id); j += 8 {
		v := r.Uint64()
		for k := 0; k < 8 && j+k < len(id); k++ {
			id[j+k] = byte(v >> (8 * k))
		}
	}
	// Bits above i equal self's, bit i differs, bits below are random.
	// Bit positions count from the least significant bit of the ID.
	for bit := IDBits - 1; bit >= i; bit-- {
		byteIdx := (IDBits - 1 - bit) / 8
		mask := byte(0x80) >> ((IDBits - 1 - bit) % 8)
		v := self[byteIdx] & mask
		if bit == i {
			v ^= mask
		}
		id[byteIdx] = id[byteIdx]&^mask | v
	}
	return id
}

// locate returns id's bucket and its index there, or -1 if id is not in
// the table (or is ourselves).
func (t *Table) locate(id proto.NodeID) (*bucket, int) {
	if id == t.self {
		return nil, -1
	}
	b := t.at(BucketIndex(t.self, id))
	if b == nil {
		return nil, -1
	}
	return b, t.find(b, id)
}
