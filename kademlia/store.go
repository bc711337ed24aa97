package kademlia

import (
	"fmt"
	"slices"
	"time"

	"veil/proto"
)

// Store keeps the provider records other nodes asked this node to hold:
// at most MaxRecords in all and MaxRecordsPerKey per hash_name, each until
// it expires. Put verifies a record fully before touching any state. Not
// safe for concurrent use.
type Store struct {
	maxRecords, maxPerKey int
	maxTTL                time.Duration
	byKey                 map[proto.HashName][]proto.ProviderRecord
	n                     int
}

// NewStore returns an empty store with cfg's limits.
func NewStore(cfg Config) *Store {
	return &Store{
		maxRecords: cfg.MaxRecords, maxPerKey: cfg.MaxRecordsPerKey, maxTTL: cfg.MaxRecordTTL,
		byKey: make(map[proto.HashName][]proto.ProviderRecord),
	}
}

// Len is the number of records held (expired ones included until Expire).
func (s *Store) Len() int { return s.n }

// Check reports why r, sent by from at now, may not be stored: a record
// about another node than its sender, a bad layout, signature or owner,
// an expired record or one expiring beyond MaxRecordTTL.
func (s *Store) Check(from proto.NodeID, r proto.ProviderRecord, now time.Time) error {
	if r.ORDB != from {
		return fmt.Errorf("%w: ORDB %v sent by %v", ErrNotOwner, r.ORDB.Short(), from.Short())
	}
	if err := r.Verify(now); err != nil {
		return fmt.Errorf("kademlia: store: %w", err)
	}
	if limit := now.Add(s.maxTTL).Unix(); r.Expires > uint64(limit) {
		return fmt.Errorf("%w: expires %d, limit %d", ErrTTLTooLong, r.Expires, limit)
	}
	return nil
}

// Put stores r sent by from at now, replacing the record of the same ORDB
// for the same key if r expires later. On error nothing changed.
func (s *Store) Put(from proto.NodeID, r proto.ProviderRecord, now time.Time) error {
	if err := s.Check(from, r, now); err != nil {
		return err
	}
	list := s.byKey[r.Key]
	i := slices.IndexFunc(list, func(x proto.ProviderRecord) bool { return x.ORDB == r.ORDB })
	if i >= 0 {
		if r.Expires < list[i].Expires {
			return fmt.Errorf("%w: expires %d < %d", ErrStale, r.Expires, list[i].Expires)
		}
		list[i] = cloneRecord(r)
		return nil
	}
	if s.n >= s.maxRecords {
		s.Expire(now)
	}
	if s.n >= s.maxRecords {
		return fmt.Errorf("%w: %d records", ErrStoreFull, s.n)
	}
	if len(list) >= s.maxPerKey {
		return fmt.Errorf("%w: %d records for %v", ErrStoreFull, len(list), r.Key.Key().Short())
	}
	s.byKey[r.Key] = append(list, cloneRecord(r))
	s.n++
	return nil
}

// Get returns up to max unexpired records for key.
func (s *Store) Get(key proto.HashName, now time.Time, max int) []proto.ProviderRecord {
	var out []proto.ProviderRecord
	t := uint64(max64(now.Unix(), 0))
	for _, r := range s.byKey[key] {
		if r.Expires > t {
			out = append(out, r)
			if len(out) == max {
				break
			}
		}
	}
	return out
}

// Expire drops the records expired at now and returns how many.
func (s *Store) Expire(now time.Time) int {
	t := uint64(max64(now.Unix(), 0))
	dropped := 0
	for k, list := range s.byKey {
		kept := list[:0]
		for _, r := range list {
			if r.Expires > t {
				kept = append(kept, r)
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
