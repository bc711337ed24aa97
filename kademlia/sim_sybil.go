package kademlia

import (
	"bytes"
	"time"

	"veil/proto"
)

// colluders is the hostile part of a simulated network: nodes that, once
// SetColluders turned them, answer every lookup with the colluders
// closest to its target (so a lookup that trusts them meets nobody else),
// acknowledge STOREs and drop the records, and answer FIND_VALUE with
// bogus records: one forged in the name of a real provider (its signature
// does not verify) and one the colluder signed itself, claiming to serve
// the content. They answer PING, so they stay in tables.
type colluders struct {
	is   []bool
	list []int32
	// signed caches a colluder's self-signed record per key.
	signed map[colluderKey]proto.ProviderRecord
}

type colluderKey struct {
	node int32
	key  proto.HashName
}

// SetColluders turns the fraction frac of the nodes (node 0, the bridge,
// excepted) into colluders and returns their indexes. Call it after
// Build: colluders join as honest nodes do.
func (s *Sim) SetColluders(frac float64) []int {
	n := int(frac * float64(len(s.nodes)))
	perm := s.rng.Perm(len(s.nodes) - 1)
	s.coll = &colluders{is: make([]bool, len(s.nodes)), signed: make(map[colluderKey]proto.ProviderRecord)}
	out := make([]int, 0, n)
	for _, p := range perm[:n] {
		i := p + 1
		s.coll.is[i] = true
		s.coll.list = append(s.coll.list, int32(i))
		out = append(out, i)
	}
	return out
}

// Colluder reports whether node i colludes.
func (s *Sim) Colluder(i int) bool { return s.coll != nil && s.coll.is[i] }

// collude is a colluder's answer, at now, to a request delivered to node
// to; false for silence.
func (s *Sim) collude(to, from int32, m proto.DHTMessage, now int64) (proto.DHTMessage, bool) {
	reply := proto.DHTMessage{TxID: m.TxID}
	switch m.Type {
	case proto.DHTPing:
		reply.Type = proto.DHTPong
	case proto.DHTStore:
		reply.Type, reply.Status = proto.DHTStored, proto.StoreOK // and dropped
	case proto.DHTFindNode:
		reply.Type, reply.Contacts = proto.DHTNodes, s.closestColluders(m.Target, to)
	case proto.DHTFindValue:
		reply.Type, reply.Contacts = proto.DHTValue, s.closestColluders(m.Target, to)
		key := proto.HashName(m.Target)
		forged := s.colluderRecord(to, key, now)
		forged.ORDB = s.nodes[from].id // in someone else's name: fails Verify
		reply.Records = []proto.ProviderRecord{s.colluderRecord(to, key, now), forged}
	default:
		return reply, false // FIND_PEER and the rest: silence
	}
	return reply, true
}

// colluderRecord is node i's self-signed record for key, valid for the
// TTL of the network's config.
func (s *Sim) colluderRecord(i int32, key proto.HashName, now int64) proto.ProviderRecord {
	ck := colluderKey{i, key}
	if r, ok := s.coll.signed[ck]; ok {
		return r
	}
	c := s.nodes[i].core
	r := proto.ProviderRecord{
		Key: key, OnionKey: c.id.OnionKey, Addr: c.id.Addr, Pieces: proto.MaxPieces,
		Expires: uint64(time.Unix(0, now).Add(s.cfg.Core.RecordTTL).Unix()),
	}
	r.Sign(c.id.Key)
	s.coll.signed[ck] = r
	return r
}

// closestColluders returns the K colluders closest to target, but not
// self.
func (s *Sim) closestColluders(target proto.NodeID, self int32) []proto.DHTContact {
	k := s.cfg.Core.K
	type cand struct {
		d proto.NodeID
		i int32
	}
	best := make([]cand, 0, k+1)
	for _, i := range s.coll.list {
		if i == self {
			continue
		}
		d := proto.Xor(s.nodes[i].id, target)
		if len(best) == k && bytes.Compare(d[:], best[k-1].d[:]) >= 0 {
			continue
		}
		j := len(best)
		for j > 0 && bytes.Compare(d[:], best[j-1].d[:]) < 0 {
			j--
		}
		best = append(best, cand{})
		copy(best[j+1:], best[j:])
		best[j] = cand{d, i}
		if len(best) > k {
			best = best[:k]
		}
	}
	out := make([]proto.DHTContact, len(best))
	for j, c := range best {
		out[j] = s.nodes[c.i].core.Contact()
	}
	return out
}
