package kademlia

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"veil/proto"
)

// Identity is what a Core knows of its own node.
type Identity struct {
	ID       proto.NodeID
	Addr     netip.AddrPort     // where the node accepts links; zero if it accepts none
	OnionKey []byte             // X25519 public key (proto.OnionKeySize), advertised to bridges and in records
	Key      ed25519.PrivateKey // signs provider records; nil for a node that provides nothing
}

// Send is one RPC a Core asks its driver to deliver.
type Send struct {
	To  proto.DHTContact // a driver may use an existing link to To.ID when To.Addr is zero
	Msg proto.DHTMessage
}

// OpID names an operation (lookup, provide, bootstrap) of one Core.
type OpID uint64

// OpKind is what an operation does.
type OpKind uint8

// Operation kinds.
const (
	OpFindNode  OpKind = iota // iterative FIND_NODE
	OpFindValue               // iterative FIND_VALUE
	OpProvide                 // FIND_NODE, then STORE on the K closest
	OpBootstrap               // FIND_PEER to the bridges, then FIND_NODE of self
	OpRefresh                 // FIND_NODE of a random ID in an idle bucket (internal)
)

// Result is a finished operation.
type Result struct {
	Op      OpID
	Kind    OpKind
	Target  proto.NodeID
	Closest []proto.DHTContact     // up to K that answered, closest first
	Records []proto.ProviderRecord // FIND_VALUE: verified records, one per ORDB
	Stored  int                    // Provide: STOREs acknowledged with StoreOK
	Rounds  int                    // lookup hop depth (see Lookup.Rounds)
	Msgs    int                    // RPCs the operation sent
	Err     error
}

type op struct {
	id       OpID
	kind     OpKind
	internal bool // refresh and republish: no Result
	lookup   *Lookup
	record   proto.ProviderRecord // OpProvide
	storing  bool                 // OpProvide: STOREs sent
	waiting  int                  // STOREs or FIND_PEERs in flight
	stored   int
	msgs     int
	seeds    []proto.DHTContact // OpBootstrap: contacts the bridges gave
	attempt  int                // OpBootstrap: retries so far
}

// bootstrapRetries is how many times a join that left the table empty
// (its few messages lost) is tried again at once, before the
// RebootstrapInterval timer takes over.
const bootstrapRetries = 2

type pendingRPC struct {
	to       proto.DHTContact
	typ      proto.DHTType
	target   proto.NodeID
	deadline time.Time
	op       OpID // 0: a ping of the table
}

// pendingSet holds the RPCs a node waits for: their TxIDs apart from
// the rest, searched one by one (a node has a few in flight, so the
// TxIDs fit in a cache line or two, where a map's lookup touches its
// header, groups and slots in other lines).
type pendingSet struct {
	tx  []uint64
	rpc []pendingRPC
}

func (s *pendingSet) len() int { return len(s.tx) }

// find returns the index of txid, -1 if it is not pending.
func (s *pendingSet) find(txid uint64) int {
	for i, t := range s.tx {
		if t == txid {
			return i
		}
	}
	return -1
}

func (s *pendingSet) add(txid uint64, p pendingRPC) {
	s.tx = append(s.tx, txid)
	s.rpc = append(s.rpc, p)
}

// remove drops entry i, the last taking its place (the order of the
// entries never matters: Tick sorts what expires).
func (s *pendingSet) remove(i int) {
	last := len(s.tx) - 1
	s.tx[i], s.rpc[i] = s.tx[last], s.rpc[last]
	s.rpc[last] = pendingRPC{}
	s.tx, s.rpc = s.tx[:last], s.rpc[:last]
}

// opSet holds the operations in progress: their IDs apart, searched one
// by one (a node has a few at once; a map's lookup touches more cache
// lines).
type opSet struct {
	ids []OpID
	ops []*op
}

func (s *opSet) len() int { return len(s.ids) }

// get returns operation id; nil if it is not in progress.
func (s *opSet) get(id OpID) *op {
	for i, x := range s.ids {
		if x == id {
			return s.ops[i]
		}
	}
	return nil
}

func (s *opSet) add(o *op) {
	s.ids = append(s.ids, o.id)
	s.ops = append(s.ops, o)
}

// remove drops operation id, the last taking its place; false if it was
// not in progress.
func (s *opSet) remove(id OpID) bool {
	for i, x := range s.ids {
		if x == id {
			last := len(s.ids) - 1
			s.ids[i], s.ops[i] = s.ids[last], s.ops[last]
			s.ops[last] = nil
			s.ids, s.ops = s.ids[:last], s.ops[:last]
			return true
		}
	}
	return false
}

type provided struct {
	pieces      uint8
	facilitator bool
	next        time.Time
}

// Core is one node's DHT: routing table, record store, the RPCs it waits
// for and the operations in progress. It is a pure state machine: Handle,
// Tick, Unreachable and the operation calls take the time as input, and
// Ready hands out the RPCs to send and the operations finished. Not safe
// for concurrent use.
type Core struct {
	cfg      Config
	id       Identity
	rng      *rand.Rand
	table    Table // in the core's own memory: one cache miss less a message
	store    *Store
	pending  pendingSet
	ops      opSet
	nextOp   OpID
	provided map[proto.HashName]*provided
	bridges  []proto.DHTContact

	lastBootstrap time.Time
	lastExpire    time.Time

	sends   []Send
	results []Result

	// contacts, if set (the simulator), lends the slices NODES and VALUE
	// answers carry, and takes them back once delivered.
	contacts *contactPool
}

// contactPool recycles, in the simulator, the memory a core would
// otherwise allocate again and again: the contact lists of NODES and
// VALUE answers (taken back once delivered), the candidates of finished
// lookups and emptied pending-RPC lists. A nil pool (a real node) recycles
// nothing.
type contactPool struct {
	free    [][]proto.DHTContact
	cands   []candBuf
	pending []pendingSet
}

// contactPoolMax bounds each of a pool's free lists.
const contactPoolMax = 4096

func (p *contactPool) get() []proto.DHTContact {
	if p == nil || len(p.free) == 0 {
		return nil
	}
	b := p.free[len(p.free)-1]
	p.free = p.free[:len(p.free)-1]
	return b
}

func (p *contactPool) put(b []proto.DHTContact) {
	if cap(b) > 0 && len(p.free) < contactPoolMax {
		p.free = append(p.free, b[:0])
	}
}

// getCands returns an empty candidate list; unallocated if none is free.
func (p *contactPool) getCands() candBuf {
	if p == nil || len(p.cands) == 0 {
		return candBuf{}
	}
	b := p.cands[len(p.cands)-1]
	p.cands = p.cands[:len(p.cands)-1]
	return b
}

func (p *contactPool) putCands(b candBuf) {
	if p != nil && cap(b.cands) > 0 && cap(b.keys) > 0 && len(p.cands) < contactPoolMax {
		p.cands = append(p.cands, candBuf{b.cands[:0], b.keys[:0]})
	}
}

// getPending returns an empty pending-RPC list; an unallocated one if
// none is free.
func (p *contactPool) getPending() pendingSet {
	if p == nil || len(p.pending) == 0 {
		return pendingSet{}
	}
	m := p.pending[len(p.pending)-1]
	p.pending = p.pending[:len(p.pending)-1]
	return m
}

// putPending takes an emptied list; false if the pool is nil or full.
func (p *contactPool) putPending(m pendingSet) bool {
	if p == nil || len(p.pending) >= contactPoolMax || cap(m.tx) == 0 {
		return false
	}
	p.pending = append(p.pending, m)
	return true
}

// balance evens out the free lists of pools (the simulator's workers:
// one may serve the answers another gets back).
func balance(pools []*contactPool) {
	if len(pools) < 2 {
		return
	}
	balanceList(pools, func(p *contactPool) *[][]proto.DHTContact { return &p.free })
	balanceList(pools, func(p *contactPool) *[]candBuf { return &p.cands })
	balanceList(pools, func(p *contactPool) *[]pendingSet { return &p.pending })
}

func balanceList[T any](pools []*contactPool, list func(*contactPool) *[]T) {
	total := 0
	for _, p := range pools {
		total += len(*list(p))
	}
	avg := total / len(pools)
	var spare []T
	for _, p := range pools {
		if l := list(p); len(*l) > avg {
			spare = append(spare, (*l)[avg:]...)
			clear((*l)[avg:])
			*l = (*l)[:avg]
		}
	}
	for _, p := range pools {
		if l := list(p); len(*l) < avg && len(spare) > 0 {
			n := min(avg-len(*l), len(spare))
			*l = append(*l, spare[len(spare)-n:]...)
			spare = spare[:len(spare)-n]
		}
	}
	if len(spare) > 0 {
		l := list(pools[0])
		*l = append(*l, spare...)
	}
}

// lendSends gives the core buf (empty) to append its next sends to, if
// it holds none: the simulator passes the slice of the last Ready back,
// so a send does not allocate.
func (c *Core) lendSends(buf []Send) {
	if c.sends == nil {
		c.sends = buf[:0]
	}
}

// NewCore returns the core of node id. rng supplies transaction IDs and
// refresh targets; seed it for a reproducible run.
func NewCore(cfg Config, id Identity, rng *rand.Rand) (*Core, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(id.OnionKey) != proto.OnionKeySize {
		return nil, fmt.Errorf("%w: onion key of %d bytes", ErrBadConfig, len(id.OnionKey))
	}
	if id.Key != nil && proto.NodeIDFromKey(id.Key.Public().(ed25519.PublicKey)) != id.ID {
		return nil, fmt.Errorf("%w: ID is not the ID of the identity key", ErrBadConfig)
	}
	return &Core{
		cfg: cfg, id: id, rng: rng,
		table:    *NewTable(id.ID, cfg),
		store:    NewStore(cfg),
		provided: make(map[proto.HashName]*provided),
	}, nil
}

// ID is the node's ID.
func (c *Core) ID() proto.NodeID { return c.id.ID }

// Contact is the node as others reach it.
func (c *Core) Contact() proto.DHTContact { return proto.DHTContact{ID: c.id.ID, Addr: c.id.Addr} }

// Table is the routing table (read it only between calls).
func (c *Core) Table() *Table { return &c.table }

// Store is the record store (read it only between calls).
func (c *Core) Store() *Store { return c.store }

// Pending is the number of RPCs awaiting an answer.
func (c *Core) Pending() int { return c.pending.len() }

// Ready returns the RPCs to send and the operations finished since the
// last call. The caller owns both slices.
func (c *Core) Ready() ([]Send, []Result) {
	s, r := c.sends, c.results
	c.sends, c.results = nil, nil
	return s, r
}

// NextDeadline is the earliest time an RPC times out (zero if none).
func (c *Core) NextDeadline() time.Time {
	var t time.Time
	for _, p := range c.pending.rpc {
		if t.IsZero() || p.deadline.Before(t) {
			t = p.deadline
		}
	}
	return t
}

func (c *Core) send(to proto.DHTContact, m proto.DHTMessage, now time.Time, o *op) {
	if m.Type.IsRequest() {
		for {
			m.TxID = c.rng.Uint64()
			if m.TxID != 0 && c.pending.find(m.TxID) < 0 {
				break
			}
		}
		m.Sender = c.id.Addr
		p := pendingRPC{to: to, typ: m.Type, target: m.Target, deadline: now.Add(c.cfg.RPCTimeout)}
		if o != nil {
			p.op = o.id
			o.msgs++
		}
		if cap(c.pending.tx) == 0 {
			c.pending = c.contacts.getPending()
		}
		c.pending.add(m.TxID, p)
	}
	c.sends = append(c.sends, Send{To: to, Msg: m})
}

// seen updates the table with a contact heard from, pinging the oldest of
// a full bucket. A contact whose ID does not solve the ID puzzle stays out.
func (c *Core) seen(ct proto.DHTContact, onionKey []byte, now time.Time) {
	if !proto.IDWorkOK(ct.ID, c.cfg.IDWorkBits) {
		return
	}
	oldest, ping, err := c.table.Seen(ct, onionKey, now)
	if err == nil && ping {
		c.send(oldest, proto.DHTMessage{Type: proto.DHTPing}, now, nil)
	}
}

// Handle processes one RPC received from the node from (authenticated by
// the link it came on) whose link comes from address ip (the link's remote
// address; invalid if unknown). A sender's contact takes its IP from ip,
// never from what the sender claims, so the subnet limits of the table and
// the store compare addresses the sender did not choose; only the port
// comes from the claim (the remote port of a link it dialed is not where it
// listens). An error means a bad or unexpected RPC; the core then changed
// nothing (it may still answer a refused STORE).
func (c *Core) Handle(from proto.NodeID, ip netip.Addr, m proto.DHTMessage, now time.Time) error {
	return c.handle(from, ip, &m, now)
}

// handle is Handle taking the message by reference (it is large); m is
// not kept.
func (c *Core) handle(from proto.NodeID, ip netip.Addr, m *proto.DHTMessage, now time.Time) error {
	if from == c.id.ID {
		return ErrSelf
	}
	if m.Type.IsRequest() {
		return c.handleRequest(from, ip, m, now)
	}
	return c.handleAnswer(from, ip, m, now)
}

// observed is the address of a contact heard from ip that listens on the
// port of claimed; invalid when either is unknown.
func observed(ip netip.Addr, claimed netip.AddrPort) netip.AddrPort {
	if !ip.IsValid() || !claimed.IsValid() || claimed.Port() == 0 {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ip.Unmap(), claimed.Port())
}

func (c *Core) handleRequest(from proto.NodeID, ip netip.Addr, m *proto.DHTMessage, now time.Time) error {
	// The answer goes back over the link the request came on; the address
	// matters only for the table.
	sender := proto.DHTContact{ID: from, Addr: observed(ip, m.Sender)}
	reply := proto.DHTMessage{TxID: m.TxID}
	var onionKey []byte
	switch m.Type {
	case proto.DHTPing:
		reply.Type = proto.DHTPong
	case proto.DHTFindNode:
		reply.Type = proto.DHTNodes
		reply.Contacts = c.table.appendClosestContacts(c.contacts.get(), m.Target, c.cfg.K, from)
	case proto.DHTFindValue:
		reply.Type = proto.DHTNodes
		reply.Contacts = c.table.appendClosestContacts(c.contacts.get(), m.Target, c.cfg.K, from)
		if recs := c.store.Sample(proto.HashName(m.Target), now, proto.MaxDHTRecords, c.rng); len(recs) > 0 {
			reply.Type, reply.Records = proto.DHTValue, recs
		}
	case proto.DHTStore:
		reply.Type = proto.DHTStored
		if err := c.store.Put(from, ip, m.Record, now); err != nil {
			reply.Status = proto.StoreRejected
			if errors.Is(err, ErrStoreFull) || errors.Is(err, ErrQuota) {
				reply.Status = proto.StoreFull
			}
			c.sends = append(c.sends, Send{To: sender, Msg: reply})
			return err
		}
	case proto.DHTFindPeer:
		if m.Peer.ID != from {
			return fmt.Errorf("%w: FIND_PEER for %v from %v", ErrNotOwner, m.Peer.ID.Short(), from.Short())
		}
		if a := observed(ip, m.Peer.Addr); a.IsValid() {
			sender.Addr = a
		}
		onionKey = m.Peer.OnionKey
		reply.Type = proto.DHTFoundPeer
		reply.Found.Peers = c.foundPeers(from)
	default:
		return fmt.Errorf("%w: %v", ErrNotRequest, m.Type)
	}
	c.sends = append(c.sends, Send{To: sender, Msg: reply})
	if sender.Addr.IsValid() {
		c.seen(sender, onionKey, now)
	}
	return nil
}

// foundPeers answers FIND_PEER: the contacts closest to the asker whose
// onion key this node knows, then itself.
func (c *Core) foundPeers(asker proto.NodeID) []proto.DBPeer {
	var peers []proto.DBPeer
	for _, e := range c.table.Closest(nil, asker, 4*c.cfg.K, asker) {
		if len(e.OnionKey) == proto.OnionKeySize {
			peers = append(peers, proto.DBPeer{ID: e.Contact.ID, Addr: e.Contact.Addr, OnionKey: e.OnionKey})
			if len(peers) == min(c.cfg.K, proto.MaxFoundPeers-1) {
				break
			}
		}
	}
	return append(peers, proto.DBPeer{ID: c.id.ID, Addr: c.id.Addr, OnionKey: c.id.OnionKey})
}

func (c *Core) handleAnswer(from proto.NodeID, ip netip.Addr, m *proto.DHTMessage, now time.Time) error {
	i := c.pending.find(m.TxID)
	if i < 0 || c.pending.rpc[i].to.ID != from {
		return fmt.Errorf("%w: %v tx %x from %v", ErrUnexpected, m.Type, m.TxID, from.Short())
	}
	p := c.pending.rpc[i]
	if m.Type != p.typ.Response() && !(p.typ == proto.DHTFindValue && m.Type == proto.DHTNodes) {
		return fmt.Errorf("%w: %v to a %v", ErrUnexpected, m.Type, p.typ)
	}
	var records []proto.ProviderRecord
	for _, r := range m.Records {
		// A record that does not verify is dropped, not the answer: the
		// node holding it may just be late in expiring it.
		if r.Key == proto.HashName(p.target) && proto.IDWorkOK(r.ORDB, c.cfg.IDWorkBits) && r.Verify(now) == nil {
			records = append(records, r)
		}
	}
	c.forget(i)
	heard := p.to
	if a := observed(ip, p.to.Addr); a.IsValid() {
		heard.Addr = a // the answer came from there, whatever was dialed
	}
	c.seen(heard, nil, now)
	o := c.ops.get(p.op)
	if o == nil {
		return nil // a ping of the table, or an operation already over
	}
	switch {
	case o.lookup != nil && !o.storing && (p.typ == proto.DHTFindNode || p.typ == proto.DHTFindValue):
		c.query(o, o.lookup.Answer(from, m.Contacts, records, now), now)
	case p.typ == proto.DHTStore:
		o.waiting--
		if m.Status == proto.StoreOK {
			o.stored++
		}
	case p.typ == proto.DHTFindPeer:
		o.waiting--
		for _, peer := range m.Found.Peers {
			if peer.ID != c.id.ID && peer.Addr.IsValid() {
				o.seeds = append(o.seeds, proto.DHTContact{ID: peer.ID, Addr: peer.Addr})
			}
		}
	}
	c.advance(o, now)
	return nil
}

// Unreachable reports that the RPC txid could not be sent (no link): it
// fails at once instead of at its deadline.
func (c *Core) Unreachable(txid uint64, now time.Time) {
	if i := c.pending.find(txid); i >= 0 {
		c.expire(i, now)
	}
}

// forget drops pending RPC i. An emptied list is dropped (made again by
// the next request), so an idle node holds no pending slots (100,000
// simulated nodes would hold 100 MB).
func (c *Core) forget(i int) {
	c.pending.remove(i)
	if c.pending.len() == 0 {
		c.contacts.putPending(c.pending) // the simulator's pool reuses it
		c.pending = pendingSet{}
	}
}

func (c *Core) expire(i int, now time.Time) {
	p := c.pending.rpc[i]
	c.forget(i)
	c.table.Failed(p.to.ID)
	o := c.ops.get(p.op)
	if o == nil {
		return
	}
	switch p.typ {
	case proto.DHTFindNode, proto.DHTFindValue:
		c.query(o, o.lookup.Fail(p.to.ID, now), now)
	default:
		o.waiting--
	}
	c.advance(o, now)
}

// Tick times out RPCs, refreshes idle buckets, republishes this node's
// records, drops expired records and, while the table is empty,
// bootstraps again. Call it at least every RPCTimeout.
func (c *Core) Tick(now time.Time) {
	var expired []uint64
	for i, p := range c.pending.rpc {
		if !now.Before(p.deadline) {
			expired = append(expired, c.pending.tx[i])
		}
	}
	slices.Sort(expired) // by TxID, whatever the list's order; a run must replay exactly
	for _, txid := range expired {
		if i := c.pending.find(txid); i >= 0 {
			c.expire(i, now)
		}
	}
	if c.table.Len() > 0 {
		c.refresh(c.table.DueRefresh(now, c.cfg.RefreshInterval), now)
	} else if len(c.bridges) > 0 && now.Sub(c.lastBootstrap) >= c.cfg.RebootstrapInterval {
		c.Bootstrap(c.bridges, now)
	}
	keys := make([]proto.HashName, 0, len(c.provided))
	for k, p := range c.provided {
		if !now.Before(p.next) {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b proto.HashName) int { return slices.Compare(a[:], b[:]) })
	for _, k := range keys {
		p := c.provided[k]
		p.next = now.Add(c.cfg.RepublishInterval)
		if o, err := c.provide(k, p, now); err == nil {
			o.internal = true
		}
	}
	if now.Sub(c.lastExpire) >= time.Minute {
		c.lastExpire = now
		c.store.Expire(now)
	}
}

// refresh looks up a random ID in each of the buckets. A refresh is
// there to fill its bucket and to make this node known in the bucket's
// range, not to find the random target: it follows one path and ends once
// as many nodes of the range as the bucket lacks (at least one) have
// answered (each is then in the table, and has seen this node), with no
// more RPCs in flight than answers it still lacks (Lookup.Next). A join
// refreshes a dozen buckets or more, so this is most of what joining
// costs: at 10,000 nodes it takes a join from ~570 messages to ~230
// (docs/PROTOCOL.md section 9 has the trade-off).
func (c *Core) refresh(buckets []int, now time.Time) {
	for _, i := range buckets {
		o, err := c.newOp(OpRefresh, now)
		if err != nil {
			return
		}
		o.internal = true
		c.startLookupPaths(o, RandomID(c.id.ID, i, c.rng), FindNode, 1, IDBits-i, max(c.cfg.K-c.table.BucketLen(i), 1), now)
	}
}

func (c *Core) newOp(kind OpKind, now time.Time) (*op, error) {
	if c.ops.len() >= c.cfg.MaxOps {
		return nil, fmt.Errorf("%w (%d)", ErrTooManyOps, c.ops.len())
	}
	c.nextOp++
	o := &op{id: c.nextOp, kind: kind}
	c.ops.add(o)
	return o, nil
}

func (c *Core) startLookup(o *op, target proto.NodeID, kind LookupKind, now time.Time) {
	c.startLookupPaths(o, target, kind, c.cfg.Paths, 0, 0, now)
}

// startLookupPaths starts o's lookup on paths disjoint paths; fill > 0
// ends it early (Lookup.EndWhenFilled).
func (c *Core) startLookupPaths(o *op, target proto.NodeID, kind LookupKind, paths, fill, need int, now time.Time) {
	c.table.MarkLookup(target, now)
	// K seeds per path: a path whose first seeds fail goes on with the
	// next instead of ending empty.
	seeds := c.table.ClosestContacts(target, c.cfg.K*paths, proto.NodeID{})
	if o.kind == OpBootstrap {
		seeds = append(seeds, o.seeds...)
	}
	cfg := c.cfg
	cfg.Paths = paths
	o.lookup = newLookup(c.id.ID, target, kind, seeds, cfg, c.contacts.getCands())
	o.lookup.EndWhenFilled(fill, need)
	c.query(o, o.lookup.Next(now), now)
	c.advance(o, now)
}

func (c *Core) query(o *op, to []proto.DHTContact, now time.Time) {
	typ := proto.DHTFindNode
	if o.lookup.Kind() == FindValue {
		typ = proto.DHTFindValue
	}
	for _, ct := range to {
		c.send(ct, proto.DHTMessage{Type: typ, Target: o.lookup.Target()}, now, o)
	}
}

// advance moves o to its next phase or finishes it.
func (c *Core) advance(o *op, now time.Time) {
	switch o.kind {
	case OpBootstrap:
		if o.lookup == nil {
			if o.waiting == 0 {
				c.startLookup(o, c.id.ID, FindNode, now)
			}
			return
		}
	case OpProvide:
		if !o.storing {
			if !o.lookup.Done() {
				return
			}
			o.storing = true
			for _, ct := range o.lookup.Closest() {
				o.waiting++
				c.send(ct, proto.DHTMessage{Type: proto.DHTStore, Record: o.record}, now, o)
			}
		}
		if o.waiting > 0 {
			return
		}
		c.finish(o, nil, now)
		return
	}
	if o.lookup.Done() {
		c.finish(o, nil, now)
	}
}

func (c *Core) finish(o *op, err error, now time.Time) {
	if !c.ops.remove(o.id) {
		return
	}
	if o.kind == OpBootstrap {
		c.refresh(c.table.JoinRefresh(now), now)
		if c.table.Len() == 0 && o.attempt < bootstrapRetries && len(c.bridges) > 0 {
			_, _ = c.bootstrap(c.bridges, now, o.attempt+1)
		}
	}
	if o.internal {
		c.recycle(o)
		return
	}
	r := Result{Op: o.id, Kind: o.kind, Stored: o.stored, Msgs: o.msgs, Err: err}
	if o.lookup != nil {
		r.Target = o.lookup.Target()
		r.Closest = o.lookup.Closest()
		r.Records = o.lookup.Records()
		r.Rounds = o.lookup.Rounds()
	}
	c.recycle(o)
	if o.kind == OpProvide && err == nil && o.stored == 0 {
		r.Err = fmt.Errorf("%w: no node stored the record", ErrUnreachable)
	}
	c.results = append(c.results, r)
}

// recycle gives a finished operation's lookup candidates to the
// simulator's pool.
func (c *Core) recycle(o *op) {
	if c.contacts != nil && o.lookup != nil {
		c.contacts.putCands(candBuf{o.lookup.cands, o.lookup.keys})
		o.lookup.cands, o.lookup.keys = nil, nil
	}
}

// FindNode starts an iterative FIND_NODE of target.
func (c *Core) FindNode(target proto.NodeID, now time.Time) (OpID, error) {
	o, err := c.newOp(OpFindNode, now)
	if err != nil {
		return 0, err
	}
	c.startLookup(o, target, FindNode, now)
	return o.id, nil
}

// FindValue starts an iterative FIND_VALUE of key: its Result carries the
// verified provider records found.
func (c *Core) FindValue(key proto.HashName, now time.Time) (OpID, error) {
	o, err := c.newOp(OpFindValue, now)
	if err != nil {
		return 0, err
	}
	c.startLookup(o, proto.NodeID(key), FindValue, now)
	return o.id, nil
}

// Provide announces that this node serves key: it signs a provider record
// expiring after RecordTTL, keeps it itself, stores it on the K closest
// nodes found by a lookup, and does so again every RepublishInterval.
func (c *Core) Provide(key proto.HashName, pieces uint8, facilitator bool, now time.Time) (OpID, error) {
	if c.id.Key == nil {
		return 0, ErrNoIdentity
	}
	if pieces > proto.MaxPieces {
		return 0, fmt.Errorf("%w: pieces %d", ErrBadConfig, pieces)
	}
	p := &provided{pieces: pieces, facilitator: facilitator, next: now.Add(c.cfg.RepublishInterval)}
	o, err := c.provide(key, p, now)
	if err != nil {
		return 0, err
	}
	c.provided[key] = p
	return o.id, nil
}

func (c *Core) provide(key proto.HashName, p *provided, now time.Time) (*op, error) {
	rec := proto.ProviderRecord{
		Key: key, OnionKey: c.id.OnionKey, Addr: c.id.Addr,
		Pieces: p.pieces, Facilitator: p.facilitator,
		Expires: uint64(now.Add(c.cfg.RecordTTL).Unix()),
	}
	rec.Sign(c.id.Key)
	o, err := c.newOp(OpProvide, now)
	if err != nil {
		return nil, err
	}
	o.record = rec
	_ = c.store.PutLocal(rec, now) // so a FIND_VALUE reaching this node finds it too
	c.startLookup(o, proto.NodeID(key), FindNode, now)
	return o, nil
}

// Bootstrap joins the DHT through bridges: FIND_PEER to each (the asker's
// DB_FIND_PEER record), then a FIND_NODE of this node's own ID seeded
// with the peers the bridges return, which fills the table. The bridges
// are kept for bootstrapping again while the table is empty.
func (c *Core) Bootstrap(bridges []proto.DHTContact, now time.Time) (OpID, error) {
	o, err := c.bootstrap(bridges, now, 0)
	if err != nil {
		return 0, err
	}
	return o.id, nil
}

// bootstrap starts a join; a retry (attempt > 0) reports no Result.
func (c *Core) bootstrap(bridges []proto.DHTContact, now time.Time, attempt int) (*op, error) {
	c.bridges = slices.Clone(bridges)
	c.lastBootstrap = now
	o, err := c.newOp(OpBootstrap, now)
	if err != nil {
		return nil, err
	}
	o.attempt, o.internal = attempt, attempt > 0
	self := proto.DBPeer{ID: c.id.ID, Addr: c.id.Addr, OnionKey: c.id.OnionKey}
	for _, b := range bridges {
		if b.ID == c.id.ID {
			continue
		}
		o.waiting++
		o.seeds = append(o.seeds, b)
		c.send(b, proto.DHTMessage{Type: proto.DHTFindPeer, Peer: self}, now, o)
	}
	c.advance(o, now)
	return o, nil
}
