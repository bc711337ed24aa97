package kademlia

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"veil/proto"
)

// Store keeps the provider records other nodes asked this node to hold,
// each until it expires. Put verifies a record fully before touching any
// state. Not safe for concurrent use.
//
// Hostile senders meet quotas (refused beyond them: only the sender loses)
// and, where they would lock others out, eviction:
//
//   - one sender (the ORDB that signed the record, who must be the one
//     sending it) keeps at most MaxRecordsPerSender records;
//   - one /24 (IPv4) or /48 (IPv6), taken from the link the STORE came
//     on, keeps at most MaxRecordsPerSubnet records, and at most
//     MaxKeyRecordsPerSubnet for one hash_name;
//   - a hash_name holding MaxRecordsPerKey records, or a store holding
//     MaxRecords, takes a newcomer by evicting the oldest record of the
//     subnet that holds most of them (the least diverse), never by
//     refusing: identities flooding one hash_name push out each other
//     first, and a real provider that comes or republishes gets in.
type Store struct {
	maxRecords, maxPerKey   int
	maxPerSender            int
	maxPerSubnet, maxKeyNet int
	work                    int
	maxTTL                  time.Duration
	byKey                   map[proto.HashName][]held
	senders                 map[proto.NodeID]int
	subnets                 map[netip.Prefix]*subnetRecords
	n                       int
	seq                     uint64
}

// held is one record kept, with where it came from.
type held struct {
	rec    proto.ProviderRecord
	subnet netip.Prefix // the sender's /24 or /48; invalid for our own records
	seq    uint64       // order of arrival (a refresh keeps its place)
	remote bool         // counted against its sender's quota
}

// subnetRecords are the records one subnet sent, oldest first. order may
// hold refs to records already gone (expired, replaced by eviction): they
// are skipped and compacted away.
type subnetRecords struct {
	count int
	order []heldRef
}

type heldRef struct {
	key  proto.HashName
	ordb proto.NodeID
	seq  uint64
}

// NewStore returns an empty store with cfg's limits.
func NewStore(cfg Config) *Store {
	return &Store{
		maxRecords: cfg.MaxRecords, maxPerKey: cfg.MaxRecordsPerKey,
		maxPerSender: cfg.MaxRecordsPerSender, maxPerSubnet: cfg.MaxRecordsPerSubnet,
		maxKeyNet: cfg.MaxKeyRecordsPerSubnet, work: cfg.IDWorkBits, maxTTL: cfg.MaxRecordTTL,
		byKey:   make(map[proto.HashName][]held),
		senders: make(map[proto.NodeID]int),
		subnets: make(map[netip.Prefix]*subnetRecords),
	}
}

// Len is the number of records held (expired ones included until Expire).
func (s *Store) Len() int { return s.n }

// Check reports why r, sent by from at now, may not be stored: a record
// about another node than its sender, an owner whose ID does not solve the
// ID puzzle, a bad layout, signature or owner, an expired record or one
// expiring beyond MaxRecordTTL.
func (s *Store) Check(from proto.NodeID, r proto.ProviderRecord, now time.Time) error {
	if r.ORDB != from {
		return fmt.Errorf("%w: ORDB %v sent by %v", ErrNotOwner, r.ORDB.Short(), from.Short())
	}
	if !proto.IDWorkOK(r.ORDB, s.work) {
		return fmt.Errorf("%w: record owner %v", ErrIDWork, r.ORDB.Short())
	}
	if err := r.Verify(now); err != nil {
		return fmt.Errorf("kademlia: store: %w", err)
	}
	if limit := now.Add(s.maxTTL).Unix(); r.Expires > uint64(limit) {
		return fmt.Errorf("%w: expires %d, limit %d", ErrTTLTooLong, r.Expires, limit)
	}
	return nil
}

// Put stores r sent by from, whose link comes from address ip, at now. A
// record of the same ORDB for the same key is replaced if r expires later.
// On error nothing changed.
func (s *Store) Put(from proto.NodeID, ip netip.Addr, r proto.ProviderRecord, now time.Time) error {
	if err := s.Check(from, r, now); err != nil {
		return err
	}
	var net netip.Prefix
	if ip.IsValid() {
		net = subnet(ip)
	}
	return s.put(r, net, true, now)
}

// PutLocal keeps a record this node signed itself: no quota applies and
// it is never evicted.
func (s *Store) PutLocal(r proto.ProviderRecord, now time.Time) error {
	if err := r.Verify(now); err != nil {
		return fmt.Errorf("kademlia: store: %w", err)
	}
	return s.put(r, netip.Prefix{}, false, now)
}

func (s *Store) put(r proto.ProviderRecord, net netip.Prefix, quotas bool, now time.Time) error {
	list := s.byKey[r.Key]
	if i := slices.IndexFunc(list, func(h held) bool { return h.rec.ORDB == r.ORDB }); i >= 0 {
		if r.Expires < list[i].rec.Expires {
			return fmt.Errorf("%w: expires %d < %d", ErrStale, r.Expires, list[i].rec.Expires)
		}
		list[i].rec = cloneRecord(r)
		return nil
	}
	if quotas {
		if s.maxPerSender > 0 && s.senders[r.ORDB] >= s.maxPerSender {
			return fmt.Errorf("%w: %v holds %d records", ErrQuota, r.ORDB.Short(), s.senders[r.ORDB])
		}
		if net.IsValid() && s.maxPerSubnet > 0 && s.subnetCount(net) >= s.maxPerSubnet {
			return fmt.Errorf("%w: subnet %v holds %d records", ErrQuota, net, s.subnetCount(net))
		}
		if net.IsValid() && s.maxKeyNet > 0 {
			n := 0
			for _, h := range list {
				if h.subnet == net {
					n++
				}
			}
			if n >= s.maxKeyNet {
				return fmt.Errorf("%w: subnet %v holds %d records for %v", ErrQuota, net, n, r.Key.Key().Short())
			}
		}
	}
	if len(list) >= s.maxPerKey {
		if !s.evictFromKey(r.Key) {
			return fmt.Errorf("%w: %d records of our own for %v", ErrStoreFull, len(list), r.Key.Key().Short())
		}
	}
	if s.n >= s.maxRecords {
		s.Expire(now)
	}
	if s.n >= s.maxRecords && !s.evictOne() {
		return fmt.Errorf("%w: %d records of our own", ErrStoreFull, s.n)
	}
	s.seq++
	h := held{rec: cloneRecord(r), subnet: net, seq: s.seq, remote: quotas}
	s.byKey[r.Key] = append(s.byKey[r.Key], h)
	s.n++
	if quotas {
		s.senders[r.ORDB]++
	}
	if net.IsValid() {
		sr := s.subnets[net]
		if sr == nil {
			sr = &subnetRecords{}
			s.subnets[net] = sr
		}
		sr.count++
		if len(sr.order) > 2*sr.count+16 {
			sr.order = slices.DeleteFunc(sr.order, func(ref heldRef) bool { return !s.holds(ref) })
		}
		sr.order = append(sr.order, heldRef{key: r.Key, ordb: r.ORDB, seq: h.seq})
	}
	return nil
}

func (s *Store) subnetCount(net netip.Prefix) int {
	if sr := s.subnets[net]; sr != nil {
		return sr.count
	}
	return 0
}

// evictFromKey drops the oldest record of the subnet holding most of
// key's records; false if key holds only our own.
func (s *Store) evictFromKey(key proto.HashName) bool {
	list := s.byKey[key]
	counts := make(map[netip.Prefix]int) // senders of unknown address count as one subnet
	for _, h := range list {
		if h.remote {
			counts[h.subnet]++
		}
	}
	victim := -1
	for i, h := range list {
		if !h.remote {
			continue // our own
		}
		if victim < 0 || counts[h.subnet] > counts[list[victim].subnet] ||
			counts[h.subnet] == counts[list[victim].subnet] && h.seq < list[victim].seq {
			victim = i
		}
	}
	if victim < 0 {
		return false
	}
	s.removeAt(key, victim)
	return true
}

// evictOne drops the oldest record of the subnet holding most records;
// false if the store holds only our own.
func (s *Store) evictOne() bool {
	var most netip.Prefix
	for net, sr := range s.subnets {
		if c := s.subnets[most]; c == nil || sr.count > c.count || sr.count == c.count && net.Addr().Less(most.Addr()) {
			most = net
		}
	}
	sr := s.subnets[most]
	if sr == nil {
		return false
	}
	for len(sr.order) > 0 {
		ref := sr.order[0]
		sr.order = sr.order[1:] // stale refs (expired records) are skipped
		list := s.byKey[ref.key]
		if i := slices.IndexFunc(list, func(h held) bool { return h.seq == ref.seq }); i >= 0 {
			s.removeAt(ref.key, i)
			return true
		}
	}
	return false
}

// removeAt drops key's i-th record and its accounting.
func (s *Store) removeAt(key proto.HashName, i int) {
	list := s.byKey[key]
	s.forget(list[i])
	list = slices.Delete(list, i, i+1)
	if len(list) == 0 {
		delete(s.byKey, key)
	} else {
		s.byKey[key] = list
	}
	s.n--
}

// forget undoes h's quota accounting.
func (s *Store) forget(h held) {
	if h.remote {
		if c := s.senders[h.rec.ORDB]; c <= 1 {
			delete(s.senders, h.rec.ORDB)
		} else {
			s.senders[h.rec.ORDB] = c - 1
		}
	}
	if sr := s.subnets[h.subnet]; h.subnet.IsValid() && sr != nil {
		sr.count--
		if sr.count == 0 {
			delete(s.subnets, h.subnet)
		}
	}
}

// holds reports whether the record ref names is still kept.
func (s *Store) holds(ref heldRef) bool {
	return slices.ContainsFunc(s.byKey[ref.key], func(h held) bool { return h.seq == ref.seq })
}

// Get returns up to max unexpired records for key.
func (s *Store) Get(key proto.HashName, now time.Time, max int) []proto.ProviderRecord {
	var out []proto.ProviderRecord
	t := uint64(max64(now.Unix(), 0))
	for _, h := range s.byKey[key] {
		if h.rec.Expires > t {
			out = append(out, h.rec)
			if len(out) == max {
				break
			}
		}
	}
	return out
}

// Sample returns up to max unexpired records for key, picked for
// diversity: records of the subnets holding fewest of key's records
// first, ties in the order rng shuffles them. A flood of records from a
// few subnets does not crowd real providers out of a VALUE answer, and
// nodes answering the same lookup return different records when they
// hold more than max.
func (s *Store) Sample(key proto.HashName, now time.Time, max int, rng *rand.Rand) []proto.ProviderRecord {
	list := s.byKey[key]
	t := uint64(max64(now.Unix(), 0))
	live := make([]held, 0, len(list))
	counts := make(map[netip.Prefix]int)
	for _, h := range list {
		if h.rec.Expires > t {
			live = append(live, h)
			counts[h.subnet]++
		}
	}
	if len(live) > max {
		rng.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
		slices.SortStableFunc(live, func(a, b held) int { return counts[a.subnet] - counts[b.subnet] })
		live = live[:max]
	}
	var out []proto.ProviderRecord
	for _, h := range live {
		out = append(out, h.rec)
	}
	return out
}

// SenderRecords is the number of records from sender held.
func (s *Store) SenderRecords(sender proto.NodeID) int { return s.senders[sender] }

// Expire drops the records expired at now and returns how many.
func (s *Store) Expire(now time.Time) int {
	t := uint64(max64(now.Unix(), 0))
	dropped := 0
	for k, list := range s.byKey {
		kept := list[:0]
		for _, h := range list {
			if h.rec.Expires > t {
				kept = append(kept, h)
			} else {
				s.forget(h)
			}
		}
		dropped += len(list) - len(kept)
		if len(kept) == 0 {
			delete(s.byKey, k)
		} else {
			clear(list[len(kept):])
			s.byKey[k] = kept
		}
	}
	s.n -= dropped
	return dropped
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// cloneRecord copies r's byte slices, which may alias a parse buffer.
func cloneRecord(r proto.ProviderRecord) proto.ProviderRecord {
	r.OnionKey = slices.Clone(r.OnionKey)
	r.IdentityKey = slices.Clone(r.IdentityKey)
	r.Signature = slices.Clone(r.Signature)
	return r
}
