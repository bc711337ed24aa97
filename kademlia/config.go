package kademlia

import (
	"errors"
	"fmt"
	"time"

	"veil/proto"
)

// Constants the protocol fixes.
const (
	// IDBits is the size of the keyspace: one bucket per bit.
	IDBits = 160
)

// Errors of this package. Callers compare with errors.Is.
var (
	ErrSelf          = errors.New("kademlia: contact is this node")
	ErrNoAddr        = errors.New("kademlia: contact has no address")
	ErrSubnetFull    = errors.New("kademlia: bucket already holds the maximum from this subnet")
	ErrBucketFull    = errors.New("kademlia: bucket full, oldest contact being pinged")
	ErrNotOwner      = errors.New("kademlia: record is about someone else than its sender")
	ErrTTLTooLong    = errors.New("kademlia: record expires too far in the future")
	ErrStale         = errors.New("kademlia: record older than the one held")
	ErrStoreFull     = errors.New("kademlia: record store full")
	ErrQuota         = errors.New("kademlia: sender over its record quota")
	ErrIDWork        = errors.New("kademlia: node ID does not solve the ID puzzle")
	ErrUnexpected    = errors.New("kademlia: unexpected answer")
	ErrNotRequest    = errors.New("kademlia: not a request")
	ErrNoIdentity    = errors.New("kademlia: node has no identity key to sign with")
	ErrTooManyOps    = errors.New("kademlia: too many operations in progress")
	ErrClosed        = errors.New("kademlia: node closed")
	ErrUnreachable   = errors.New("kademlia: node unreachable")
	ErrInboxFull     = errors.New("kademlia: inbox full")
	ErrBadConfig     = errors.New("kademlia: bad config")
	ErrLookupTimeout = errors.New("kademlia: operation timed out")
)

// Config holds the DHT's settings. The zero value is not usable; start
// from DefaultConfig.
type Config struct {
	// K is the bucket size and the number of closest nodes a lookup
	// returns and a record is stored on (the Peersm specification: 8).
	K int
	// Alpha is the number of FIND_NODE RPCs a lookup keeps in flight.
	Alpha int
	// AlphaFindValue is the same for FIND_VALUE (the Peersm specification:
	// the 4 closest).
	AlphaFindValue int
	// MaxPerSubnet bounds the contacts of one /24 (IPv4) or /48 (IPv6)
	// in one bucket; 0 disables the limit (tests on 127.0.0.1).
	MaxPerSubnet int
	// PingAfter: a full bucket's oldest contact is pinged before a
	// newcomer may replace it only if it was last seen longer ago than
	// this; if it was seen more recently it is known alive and the
	// newcomer is dropped without a ping. 15 minutes is how long the
	// BitTorrent DHT (BEP 5) counts a node that answered as good.
	PingAfter time.Duration
	// MaxFails is how many RPCs in a row a contact may miss before it
	// leaves the table.
	MaxFails int
	// RPCTimeout bounds the wait for any answer.
	RPCTimeout time.Duration
	// RefreshInterval: a bucket without a lookup for this long is
	// refreshed by a lookup of a random ID in its range.
	RefreshInterval time.Duration
	// RecordTTL is the lifetime of the records this node signs.
	RecordTTL time.Duration
	// RepublishInterval is how often this node re-signs and stores again
	// the records it provides; below RecordTTL.
	RepublishInterval time.Duration
	// MaxRecordTTL: records expiring later than now+MaxRecordTTL are
	// refused.
	MaxRecordTTL time.Duration
	// MaxRecords bounds the records the node keeps for others.
	MaxRecords int
	// MaxRecordsPerKey bounds the providers kept for one hash_name.
	MaxRecordsPerKey int
	// MaxRecordsPerSender bounds the records one node (the ORDB that
	// signed them, who must be their sender) may keep here over all keys;
	// beyond it its STOREs are refused. 0 disables the quota.
	MaxRecordsPerSender int
	// MaxRecordsPerSubnet bounds the records sent from one /24 (IPv4) or
	// /48 (IPv6), taken from the link's remote address, over all keys;
	// beyond it STOREs from there are refused. 0 disables the quota.
	MaxRecordsPerSubnet int
	// MaxKeyRecordsPerSubnet bounds the records for one hash_name sent
	// from one /24 or /48. 0 disables the quota (tests on 127.0.0.1).
	MaxKeyRecordsPerSubnet int
	// IDWorkBits is the ID puzzle's difficulty (proto.IDWork): contacts,
	// senders and record owners whose ID solves fewer bits are not taken
	// into the table, lookups or the store. 0 disables the check (the
	// simulator, whose IDs are drawn uniformly as solved ones are).
	IDWorkBits int
	// Paths is the number of disjoint paths a lookup follows (S/Kademlia):
	// the seeds are dealt out among them, each contact is asked by one
	// path only, and each path runs until its own K closest answered.
	// Colluding nodes that answer only with each other capture the paths
	// they are reached by, not the others.
	Paths int
	// MaxCandidates bounds the contacts one lookup tracks.
	MaxCandidates int
	// MaxOps bounds the lookups and stores in progress at once.
	MaxOps int
	// StopOnValue ends a FIND_VALUE lookup at the first answer that
	// carries records. When false the lookup goes on to the K closest, so
	// that it collects providers from several nodes (the Peersm
	// specification's reason to iterate).
	StopOnValue bool
	// RebootstrapInterval: while the table is empty, bootstrap through the
	// bridges again this often.
	RebootstrapInterval time.Duration
}

// DefaultConfig returns the settings veil runs with.
func DefaultConfig() Config {
	return Config{
		K:                      8,
		Alpha:                  3,
		AlphaFindValue:         4,
		MaxPerSubnet:           2,
		PingAfter:              15 * time.Minute,
		MaxFails:               2,
		RPCTimeout:             2 * time.Second,
		RefreshInterval:        time.Hour,
		RecordTTL:              12 * time.Hour,
		RepublishInterval:      4 * time.Hour,
		MaxRecordTTL:           24 * time.Hour,
		MaxRecords:             1 << 16,
		MaxRecordsPerKey:       64,
		MaxRecordsPerSender:    256,
		MaxRecordsPerSubnet:    2048,
		MaxKeyRecordsPerSubnet: 4,
		IDWorkBits:             proto.IDWorkBits,
		Paths:                  2,
		MaxCandidates:          128,
		MaxOps:                 64,
		StopOnValue:            false,
		RebootstrapInterval:    time.Minute,
	}
}

// Validate reports the first bad setting, naming it.
func (c Config) Validate() error {
	bad := func(name string, v any) error { return fmt.Errorf("%w: %s = %v", ErrBadConfig, name, v) }
	switch {
	case c.K < 1 || c.K > 16:
		return bad("K (1..16)", c.K)
	case c.Alpha < 1 || c.Alpha > 16:
		return bad("Alpha (1..16)", c.Alpha)
	case c.AlphaFindValue < 1 || c.AlphaFindValue > 16:
		return bad("AlphaFindValue (1..16)", c.AlphaFindValue)
	case c.MaxPerSubnet < 0:
		return bad("MaxPerSubnet", c.MaxPerSubnet)
	case c.PingAfter < 0:
		return bad("PingAfter", c.PingAfter)
	case c.MaxFails < 1:
		return bad("MaxFails", c.MaxFails)
	case c.RPCTimeout <= 0:
		return bad("RPCTimeout", c.RPCTimeout)
	case c.RefreshInterval <= 0:
		return bad("RefreshInterval", c.RefreshInterval)
	case c.RecordTTL < time.Second || c.RecordTTL > c.MaxRecordTTL:
		return bad("RecordTTL (1s..MaxRecordTTL)", c.RecordTTL)
	case c.RepublishInterval <= 0 || c.RepublishInterval >= c.RecordTTL:
		return bad("RepublishInterval (below RecordTTL)", c.RepublishInterval)
	case c.MaxRecords < 1:
		return bad("MaxRecords", c.MaxRecords)
	case c.MaxRecordsPerKey < 1:
		return bad("MaxRecordsPerKey", c.MaxRecordsPerKey)
	case c.MaxRecordsPerSender < 0 || c.MaxRecordsPerSubnet < 0 || c.MaxKeyRecordsPerSubnet < 0:
		return bad("MaxRecordsPerSender/MaxRecordsPerSubnet/MaxKeyRecordsPerSubnet (>= 0)", [3]int{c.MaxRecordsPerSender, c.MaxRecordsPerSubnet, c.MaxKeyRecordsPerSubnet})
	case c.IDWorkBits < 0 || c.IDWorkBits > proto.MaxIDWorkBits:
		return bad("IDWorkBits", c.IDWorkBits)
	case c.Paths < 1 || c.Paths > 8:
		return bad("Paths (1..8)", c.Paths)
	case c.MaxCandidates < c.K:
		return bad("MaxCandidates (>= K)", c.MaxCandidates)
	case c.MaxOps < 1:
		return bad("MaxOps", c.MaxOps)
	case c.RebootstrapInterval <= 0:
		return bad("RebootstrapInterval", c.RebootstrapInterval)
	}
	return nil
}
