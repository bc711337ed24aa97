package ordb

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"veil/chunkstore/content"
	"veil/proto"
)

// CircuitID names, for a Core, one circuit stream over which DB_* messages
// reach this ORDB or leave it: a requester's or a holder's circuit ending
// here, a circuit to a neighbour ORDB, or a facilitator's. The shell picks
// the values and never reuses one for the life of the Core; 0 means none.
type CircuitID uint64

// Seeds is what the node's user chose to seed: content published here or
// advertised with DB_INFO through the node's own circuits. Never the cache
// of what the node fetched for its user: no peer may learn what that is.
type Seeds interface {
	// Has reports, for n == 0, whether the node serves the descriptor of
	// name, and for n > 0 whether it holds chunk first of name, so that it
	// can answer a prefix of [first, first+n) (an answer may stop short;
	// the requester asks again for the rest).
	Has(name proto.HashName, first uint32, n uint16) bool
}

// Config tunes a Core. Bounds keep every table finite whatever peers send.
type Config struct {
	// Self is this ORDB's node ID: a provider record naming it is skipped.
	Self proto.NodeID

	MaxNames           int // hash_names with lists; least recently touched evicted
	MaxRefsPerName     int // entries per list (files, streams)
	MaxNamesPerCircuit int // hash_names one circuit may be referenced for
	MaxStrikes         int // failures after which a reference is dropped

	MaxRelayed int           // request IDs remembered as relayed
	RelayedTTL time.Duration // how long a relayed ID is remembered

	MaxPending           int // requests being relayed
	MaxPendingPerCircuit int // of them, from one upstream circuit
	MaxAttempts          int // forwards per request (next reference on failure)
	MaxConnects          int // providers connected to per lookup
	MaxKnownPerNeighbour int // hash_names remembered per neighbour ORDB

	ForwardTimeout     time.Duration // forwarded, no answer yet: try the next reference
	LookupTimeout      time.Duration // a FIND_VALUE with no result
	ConnectTimeout     time.Duration // a Connect with no result
	FacilitatorTimeout time.Duration // a facilitator with no answer
	AnswerLinger       time.Duration // after an answer that may continue (live runs), how long to keep routing
	RequestTimeout     time.Duration // a request not answered by then ends UNAVAILABLE

	// WindowChunks is the requester's window (~500 kB) in chunks: a live
	// requester starts two windows behind the newest chunk known.
	WindowChunks uint64

	// Facilitators: ask facilitators (BitTorrent) when lists and DHT
	// failed. Off when the node knows no facilitator service.
	Facilitators bool
}

// DefaultConfig returns the defaults; Self is left to the caller.
func DefaultConfig() Config {
	return Config{
		MaxNames:             4096,
		MaxRefsPerName:       32,
		MaxNamesPerCircuit:   256,
		MaxStrikes:           2,
		MaxRelayed:           8192,
		RelayedTTL:           2 * time.Minute,
		MaxPending:           1024,
		MaxPendingPerCircuit: 64,
		MaxAttempts:          4,
		MaxConnects:          4,
		MaxKnownPerNeighbour: 4096,
		ForwardTimeout:       10 * time.Second,
		LookupTimeout:        30 * time.Second,
		ConnectTimeout:       15 * time.Second,
		FacilitatorTimeout:   60 * time.Second,
		AnswerLinger:         30 * time.Second,
		RequestTimeout:       2 * time.Minute,
		WindowChunks:         500_000 / proto.ChunkSize,
		Facilitators:         true,
	}
}

// ErrBadConfig reports a Config value out of range.
var ErrBadConfig = errors.New("ordb: bad core config")

// Validate checks that every bound is positive.
func (c Config) Validate() error {
	for _, v := range []struct {
		name string
		n    int64
	}{
		{"MaxNames", int64(c.MaxNames)}, {"MaxRefsPerName", int64(c.MaxRefsPerName)},
		{"MaxNamesPerCircuit", int64(c.MaxNamesPerCircuit)}, {"MaxStrikes", int64(c.MaxStrikes)},
		{"MaxRelayed", int64(c.MaxRelayed)}, {"RelayedTTL", int64(c.RelayedTTL)},
		{"MaxPending", int64(c.MaxPending)}, {"MaxPendingPerCircuit", int64(c.MaxPendingPerCircuit)},
		{"MaxAttempts", int64(c.MaxAttempts)}, {"MaxConnects", int64(c.MaxConnects)},
		{"MaxKnownPerNeighbour", int64(c.MaxKnownPerNeighbour)},
		{"ForwardTimeout", int64(c.ForwardTimeout)}, {"LookupTimeout", int64(c.LookupTimeout)},
		{"ConnectTimeout", int64(c.ConnectTimeout)}, {"FacilitatorTimeout", int64(c.FacilitatorTimeout)},
		{"AnswerLinger", int64(c.AnswerLinger)}, {"RequestTimeout", int64(c.RequestTimeout)},
		{"WindowChunks", int64(min(c.WindowChunks, 1<<62))},
	} {
		if v.n <= 0 {
			return fmt.Errorf("%w: %s must be positive", ErrBadConfig, v.name)
		}
	}
	return nil
}

// Errors of the Core's inputs. The Core is unchanged when one is returned
// (a shell logs it at most; none is fatal).
var (
	ErrUnknownRequest = errors.New("ordb: no such relayed request on that circuit")
	ErrUnknownLookup  = errors.New("ordb: no lookup in progress for that hash_name")
	ErrUnknownConnect = errors.New("ordb: no connect in progress to that provider")
	ErrBadInfo        = errors.New("ordb: bad advertisement")
	ErrNotNeighbour   = errors.New("ordb: announcement on a circuit that is not a neighbour ORDB")
	ErrRefused        = errors.New("ordb: reference not taken (circuit or list full)")
)

// Action is one thing the shell must do: ServeLocal, Forward, Deliver,
// SendEnd, Lookup, Connect, AskFacilitator, Store or Propagate.
type Action interface{ action() }

// ServeLocal: answer Query on Circuit from the local seeded store, as
// Server does (descriptor, or DB_PROOF + DB_DATA, or DB_END UNAVAILABLE if
// the store changed meanwhile).
type ServeLocal struct {
	Circuit CircuitID
	Query   proto.DBQuery
}

// Forward: send Query (its counter already set) on Circuit, on a stream of
// its own, and report what comes back with HandleAnswer / HandleEnd under
// Query.RequestID. LiveStart, when HasLiveStart, is where the requester of
// a live stream should start (its descriptor query found the stream in
// OR_streams_P); the shell passes it back with the descriptor.
type Forward struct {
	Circuit      CircuitID
	Query        proto.DBQuery
	LiveStart    uint64
	HasLiveStart bool
}

// Deliver: send Msg (DB_CONNECTED, DB_PROOF or DB_DATA that came back on a
// forwarded request) to the requester on Circuit, as the answer to
// RequestID.
type Deliver struct {
	Circuit   CircuitID
	RequestID uint64
	Msg       proto.DBMessage
}

// SendEnd: send DB_END Reason on Circuit for request RequestID: to a
// requester (UNAVAILABLE: not found, counter at MaxCounter, already
// relayed) or downstream (FINISHED: the requester gave up or the request
// timed out, stop sending).
type SendEnd struct {
	Circuit   CircuitID
	RequestID uint64
	Reason    proto.DBEndReason
}

// Lookup: FIND_VALUE HashName in the DHT (4 closest first), then report
// providers with HandleLookup (once at the end, or as they come).
type Lookup struct{ HashName proto.HashName }

// Connect: build a circuit to the ORDB Provider names (its address and
// onion key are in the record), then report HandleConnect(Provider.ORDB,
// ...). HashName is the content it was found for.
type Connect struct {
	Provider proto.ProviderRecord
	HashName proto.HashName
}

// AskFacilitator: ask facilitators to fetch Query.HashName (an infohash)
// from BitTorrent and serve Query; report with HandleFacilitator under
// Query.RequestID.
type AskFacilitator struct{ Query proto.DBQuery }

// Store: STORE a provider record for HashName in the DHT naming this ORDB,
// with P (0..3) and the node's own facilitator flag.
type Store struct {
	HashName proto.HashName
	P        uint8
}

// Propagate: tell the neighbour ORDB on To that this ORDB can reach
// HashName (the Peersm specification's 'abcd', size, type). Size and Type
// are zero when not yet known from a verified descriptor.
type Propagate struct {
	To       CircuitID
	HashName proto.HashName
	Size     uint64
	Type     string
	Live     bool
}

func (ServeLocal) action()     {}
func (Forward) action()        {}
func (Deliver) action()        {}
func (SendEnd) action()        {}
func (Lookup) action()         {}
func (Connect) action()        {}
func (AskFacilitator) action() {}
func (Store) action()          {}
func (Propagate) action()      {}

// StreamInfo is a holder's advertisement of a live stream: it holds chunks
// First..Last (inclusive) of HashName, of MIME type Type.
type StreamInfo struct {
	HashName    proto.HashName
	First, Last uint64
	Type        string
}

// Announce is a neighbour ORDB telling this one that it can reach
// HashName (the Peersm specification's 'abcd', size, type).
type Announce struct {
	HashName proto.HashName
	Size     uint64
	Type     string
	Live     bool
}

type reqState uint8

const (
	stLookup      reqState = iota + 1 // waiting for a lookup and its connects
	stForwarded                       // sent downstream, no answer yet
	stFacilitator                     // facilitators asked, no answer yet
	stAnswering                       // answers coming back
)

// request is a query this ORDB relays.
type request struct {
	q         proto.DBQuery // as received (counter untouched)
	up        CircuitID
	state     reqState
	down      CircuitID
	downRef   *ref // the reference forwarded to; nil for a facilitator
	tried     []CircuitID
	attempts  int
	lookedUp  bool
	askedFac  bool
	liveStart uint64
	hasLive   bool
	deadline  time.Time // of the current state
	expires   time.Time // the whole request, until answers start
	nextChunk uint64    // answering a chunk query: the next chunk expected
	sawProof  bool
}

type lookup struct {
	waiting    []uint64 // request IDs, arrival order
	seen       map[proto.NodeID]bool
	connects   int // Connect actions issued
	connecting int // of them, unresolved
	done       bool
	deadline   time.Time
}

type connecting struct {
	names    []proto.HashName
	deadline time.Time
}

type circuit struct {
	neighbour bool
	known     knownSet
	provider  proto.NodeID // the ORDB a Connect reached, if any
	pending   int          // requests relayed for this upstream circuit
}

// Core is the ORDB decision logic of the Peersm specification as a pure
// state machine: the OR_files_P / OR_streams_P lists, the decision for a
// DB_QUERY, the relayed request IDs, the routing of answers back to
// requesters, and DB_INFO handling (STORE, propagation to neighbour ORDBs
// of only what they do not know).
//
// A DB_QUERY is decided in the Peersm specification's order: counter at
// MaxCounter, or a request ID already relayed: DB_END UNAVAILABLE; the
// descriptor or chunks the user seeds: ServeLocal; else the first valid
// reference of the name's list, which goes to the end of the list (a
// holder gets the counter as it came, another ORDB gets counter + 1);
// else FIND_VALUE, Connect to the providers found and forward once, with
// counter + 1, on the first circuit up; else facilitators; else DB_END
// UNAVAILABLE. A reference that fails (DB_END DESTROYED, a holder's
// UNAVAILABLE, silence past ForwardTimeout, a wrong answer) gets a strike
// and the next one is tried, up to MaxAttempts forwards; every request
// ends by RequestTimeout at the latest.
//
// Inputs are the Handle* methods, AddNeighbour, CircuitClosed and Tick,
// all taking now; Ready hands out the Actions. No goroutines, no I/O, no
// clock, no randomness: the same inputs give the same actions. Not safe
// for concurrent use: one goroutine, the shell, owns a Core.
//
// What a shell does. It names every circuit stream that carries DB_*
// messages with a CircuitID it never reuses, calls AddNeighbour for each
// circuit it keeps to another ORDB and CircuitClosed when a circuit ends,
// and calls Tick when NextDeadline is reached. It feeds what it parses:
//
//	DB_QUERY on any stream                  HandleQuery
//	DB_INFO from a peer                     HandleInfo
//	a holder's live-stream range            HandleStreamInfo
//	a neighbour ORDB's announcement         HandleAnnounce
//	DB_CONNECTED, DB_PROOF, DB_DATA on a    HandleAnswer(stream, request ID)
//	  forwarded request's stream
//	DB_END (requester's or forwarded)       HandleEnd(stream, request ID)
//	kademlia FindValue result               HandleLookup(name, Records, true)
//	circuit to a provider built / failed    HandleConnect
//	the facilitator service's reply         HandleFacilitator
//
// After each call it drains Ready and carries out the actions in order:
//
//	ServeLocal      answer Query on Circuit from the chunkstore, as
//	                Server does (for a live stream's descriptor, with its
//	                own start two windows behind its newest chunk)
//	Forward         open a new stream on Circuit, send Query; what comes
//	                back on that stream belongs to Query.RequestID
//	Deliver         send Msg to the requester on Circuit
//	SendEnd         send DB_END Reason on Circuit for RequestID; the
//	                request's stream is done
//	Lookup          kademlia FindValue(HashName)
//	Connect         build a circuit to Provider (address, onion key) and
//	                open an ORDB stream on it
//	AskFacilitator  hand Query to the facilitator service
//	Store           kademlia Provide(HashName, P, the node's own F flag)
//	Propagate       send the announcement (HashName, Size, Type) on To
//
// A requester's stream may carry several queries: the shell keeps the
// answers on it in query order (the Core routes per request, not per
// stream). Nothing of this reaches a log next to an address: the Core
// never learns who asked, and the shell must not write it down.
type Core struct {
	cfg   Config
	seeds Seeds

	names    *names
	relayed  *idSet
	pending  map[uint64]*request
	lookups  map[proto.HashName]*lookup
	connects map[proto.NodeID]*connecting
	circs    map[CircuitID]*circuit
	nbrs     []CircuitID // neighbour ORDBs, in the order they came
	byORDB   map[proto.NodeID]CircuitID

	actions []Action
}

// NewCore returns a Core answering locally from seeds (nil: it serves
// nothing itself and only relays).
func NewCore(cfg Config, seeds Seeds) (*Core, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Core{
		cfg: cfg, seeds: seeds,
		names:    newNames(cfg),
		relayed:  newIDSet(cfg.MaxRelayed, cfg.RelayedTTL),
		pending:  make(map[uint64]*request),
		lookups:  make(map[proto.HashName]*lookup),
		connects: make(map[proto.NodeID]*connecting),
		circs:    make(map[CircuitID]*circuit),
		byORDB:   make(map[proto.NodeID]CircuitID),
	}, nil
}

// Ready returns the actions decided since the last call, in order. The
// caller owns the slice.
func (c *Core) Ready() []Action {
	a := c.actions
	c.actions = nil
	return a
}

func (c *Core) emit(a Action) { c.actions = append(c.actions, a) }

func (c *Core) alive(id CircuitID) bool { _, ok := c.circs[id]; return ok }

// open marks id as a live circuit (an input arrived on it).
func (c *Core) open(id CircuitID) *circuit {
	ci := c.circs[id]
	if ci == nil {
		ci = &circuit{known: knownSet{max: c.cfg.MaxKnownPerNeighbour}}
		c.circs[id] = ci
	}
	return ci
}

// AddNeighbour records that id is a circuit to another ORDB: DB_INFO
// references this ORDB learns from peers are propagated to it.
func (c *Core) AddNeighbour(id CircuitID, now time.Time) {
	if id == 0 {
		return
	}
	ci := c.open(id)
	if !ci.neighbour {
		ci.neighbour = true
		c.nbrs = append(c.nbrs, id)
	}
}

// HandleQuery decides what to do with a DB_QUERY that arrived on circuit
// from (a requester, or another ORDB relaying).
func (c *Core) HandleQuery(from CircuitID, q proto.DBQuery, now time.Time) {
	if from == 0 {
		return // no circuit to answer on
	}
	ci := c.open(from)
	end := func() { c.emit(SendEnd{Circuit: from, RequestID: q.RequestID, Reason: proto.DBEndUnavailable}) }
	// The Peersm specification's loop breaker.
	if q.Counter >= proto.MaxCounter {
		end()
		return
	}
	// A query this ORDB relays or relayed comes back through a loop:
	// answer it at once, so the ORDB that sent it moves on.
	if _, dup := c.pending[q.RequestID]; dup || c.relayed.has(q.RequestID, now) {
		end()
		return
	}
	if q.NbChunks == 0 && q.Chunk != 0 {
		end() // no such query in veil: nb chunks 0 asks for the descriptor
		return
	}
	if c.seeds != nil && c.seeds.Has(q.HashName, q.Chunk, q.NbChunks) {
		c.emit(ServeLocal{Circuit: from, Query: q})
		return
	}
	if e := c.names.get(q.HashName); e != nil && e.verified && !e.live && !q.WantsDescriptor() &&
		uint64(q.Chunk) >= content.ChunkCount(e.size) {
		end() // past the end of a content whose size is known for sure
		return
	}
	if len(c.pending) >= c.cfg.MaxPending || ci.pending >= c.cfg.MaxPendingPerCircuit {
		end()
		return
	}
	r := &request{q: q, up: from, expires: now.Add(c.cfg.RequestTimeout), nextChunk: uint64(q.Chunk)}
	c.pending[q.RequestID] = r
	ci.pending++
	c.relayed.add(q.RequestID, now)
	c.advance(r, now)
}

// advance moves r to its next stage, in the Peersm specification's order:
// a listed reference, then the DHT, then facilitators, then DB_END.
func (c *Core) advance(r *request, now time.Time) {
	if r.attempts < c.cfg.MaxAttempts {
		if ref := c.choose(r); ref != nil {
			c.forward(r, ref, now)
			return
		}
	}
	// A provider found in the DHT is another ORDB: the query reaches it
	// with counter + 1, which must stay below MaxCounter to be served.
	if !r.lookedUp && int(r.q.Counter)+1 < proto.MaxCounter && r.attempts < c.cfg.MaxAttempts {
		r.lookedUp = true
		r.state = stLookup
		r.down, r.downRef = 0, nil
		l := c.lookups[r.q.HashName]
		if l == nil {
			l = &lookup{seen: make(map[proto.NodeID]bool), deadline: now.Add(c.cfg.LookupTimeout)}
			c.lookups[r.q.HashName] = l
			c.emit(Lookup{HashName: r.q.HashName})
		}
		l.waiting = append(l.waiting, r.q.RequestID)
		return
	}
	if !r.askedFac && c.cfg.Facilitators {
		r.askedFac = true
		r.state = stFacilitator
		r.down, r.downRef = 0, nil
		r.deadline = now.Add(c.cfg.FacilitatorTimeout)
		c.emit(AskFacilitator{Query: r.q})
		return
	}
	c.finish(r, true)
}

// choose picks the reference r goes to next, rotating the list it came
// from, or nil.
func (c *Core) choose(r *request) *ref {
	e := c.names.get(r.q.HashName)
	if e == nil {
		return nil
	}
	ok := func(x *ref) bool {
		if x.circ == r.up || slices.Contains(r.tried, x.circ) {
			return false
		}
		return x.kind == holderRef || int(r.q.Counter)+1 < proto.MaxCounter
	}
	if len(e.streams) > 0 {
		idx, hasIdx := uint64(r.q.Chunk), !r.q.WantsDescriptor()
		if !hasIdx {
			idx, hasIdx = e.liveStart(c.cfg.WindowChunks, c.alive)
			r.liveStart, r.hasLive = idx, hasIdx
		}
		if x := c.names.pick(e, &e.streams, c.alive, func(x *ref) bool {
			return ok(x) && (!hasIdx || x.kind == relayRef || x.covers(idx))
		}); x != nil {
			return x
		}
	}
	return c.names.pick(e, &e.files, c.alive, ok)
}

func (c *Core) forward(r *request, x *ref, now time.Time) {
	q := r.q
	if x.kind == relayRef {
		q.Counter++
	}
	r.state = stForwarded
	r.down, r.downRef = x.circ, x
	r.tried = append(r.tried, x.circ)
	r.attempts++
	r.deadline = now.Add(c.cfg.ForwardTimeout)
	c.emit(Forward{Circuit: x.circ, Query: q, LiveStart: r.liveStart, HasLiveStart: r.hasLive})
}

// finish forgets r; with unavailable, the requester gets DB_END UNAVAILABLE.
func (c *Core) finish(r *request, unavailable bool) {
	if unavailable {
		c.emit(SendEnd{Circuit: r.up, RequestID: r.q.RequestID, Reason: proto.DBEndUnavailable})
	}
	c.drop(r)
}

// drop removes r from every table (its ID stays in the relayed set).
func (c *Core) drop(r *request) {
	delete(c.pending, r.q.RequestID)
	if ci := c.circs[r.up]; ci != nil && ci.pending > 0 {
		ci.pending--
	}
	if r.state == stLookup {
		if l := c.lookups[r.q.HashName]; l != nil {
			if i := slices.Index(l.waiting, r.q.RequestID); i >= 0 {
				l.waiting = slices.Delete(l.waiting, i, i+1)
			}
		}
	}
}

// cancelDown tells the downstream side of r to stop.
func (c *Core) cancelDown(r *request) {
	if r.down != 0 && c.alive(r.down) {
		c.emit(SendEnd{Circuit: r.down, RequestID: r.q.RequestID, Reason: proto.DBEndFinished})
	}
}

// downFailed handles a forwarded request that got no answer from its
// reference: strike the reference, try the next one.
func (c *Core) downFailed(r *request, reason proto.DBEndReason, now time.Time) {
	if x := r.downRef; x != nil {
		if e := c.names.get(r.q.HashName); e != nil && (reason != proto.DBEndUnavailable || c.mustHave(e, x, r.q)) {
			c.names.strike(e, x)
		}
	}
	r.down, r.downRef = 0, nil
	if r.state == stFacilitator {
		c.finish(r, true)
		return
	}
	c.advance(r, now)
}

// mustHave reports whether reference x cannot honestly answer q with
// UNAVAILABLE: a holder lacks neither the descriptor of what it advertised
// nor, at P = 100 %, a chunk inside a size known from a verified
// descriptor. Anything else may be honest (a partial holder, a chunk past
// the end, a relay that found nothing this time), and must not cost the
// reference a strike: otherwise any requester could clear honest holders
// from the lists with queries they cannot answer.
func (c *Core) mustHave(e *nameEntry, x *ref, q proto.DBQuery) bool {
	if x.kind != holderRef {
		return false
	}
	if q.WantsDescriptor() {
		return true
	}
	return e.verified && !e.live && x.p == proto.MaxP && uint64(q.Chunk) < content.ChunkCount(e.size)
}

// HandleInfo takes a peer's DB_INFO received on circuit from: from holds
// (P+1)*25 % of m.HashName. A new hash_name is STOREd in the DHT, and
// neighbour ORDBs that do not know the name are told.
func (c *Core) HandleInfo(from CircuitID, m proto.DBInfo, now time.Time) error {
	if from == 0 {
		return ErrBadInfo
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrBadInfo, err)
	}
	c.open(from)
	return c.addHolder(from, m.HashName, &ref{circ: from, kind: holderRef, p: m.P, facilitator: m.Facilitator}, false, now)
}

// HandleStreamInfo takes a holder's advertisement of live stream chunks.
func (c *Core) HandleStreamInfo(from CircuitID, s StreamInfo, now time.Time) error {
	if from == 0 || s.First > s.Last || len(s.Type) > proto.MaxMIMEType {
		return ErrBadInfo
	}
	c.open(from)
	return c.addHolder(from, s.HashName, &ref{circ: from, kind: holderRef, typ: s.Type, p: proto.MaxP,
		first: s.First, last: s.Last}, true, now)
}

func (c *Core) addHolder(from CircuitID, h proto.HashName, x *ref, stream bool, now time.Time) error {
	e, newName, added := c.names.add(h, x, stream, c.alive)
	if e == nil {
		return ErrRefused
	}
	if newName || x.p > e.maxP {
		e.maxP = max(e.maxP, x.p)
		c.emit(Store{HashName: h, P: e.maxP})
	}
	// The circuit it came on knows it; tell the neighbours that do not.
	if ci := c.circs[from]; ci != nil && ci.neighbour {
		ci.known.add(h)
	}
	if added {
		c.propagate(e, from)
		c.wake(h, now)
	}
	if !added && !newName && !c.names.refersTo(e, from) {
		return ErrRefused
	}
	return nil
}

// propagate tells each neighbour ORDB (but the circuit the reference came
// from) about e, once: the anti-flooding rule.
func (c *Core) propagate(e *nameEntry, from CircuitID) {
	for _, n := range c.nbrs {
		ci := c.circs[n]
		if n == from || ci == nil || ci.known.has(e.name) {
			continue
		}
		ci.known.add(e.name)
		c.emit(Propagate{To: n, HashName: e.name, Size: e.size, Type: e.typ, Live: e.live || len(e.streams) > 0})
	}
}

// HandleAnnounce takes a neighbour ORDB's announcement: it can reach
// a.HashName. The reference is a relay; it is not propagated further
// (ORDBs only pass on what peers told them).
func (c *Core) HandleAnnounce(from CircuitID, a Announce, now time.Time) error {
	ci := c.circs[from]
	if ci == nil || !ci.neighbour {
		return ErrNotNeighbour
	}
	if len(a.Type) > proto.MaxMIMEType {
		return ErrBadInfo
	}
	ci.known.add(a.HashName)
	x := &ref{circ: from, kind: relayRef, size: a.Size, typ: a.Type, last: ^uint64(0)}
	e, newName, added := c.names.add(a.HashName, x, a.Live, c.alive)
	if e == nil {
		return ErrRefused
	}
	if newName {
		c.emit(Store{HashName: a.HashName, P: e.maxP})
	}
	if added {
		c.wake(a.HashName, now)
	}
	return nil
}

// wake forwards the requests waiting on a lookup for h now that h has a
// new reference ("sends the request if not already sent").
func (c *Core) wake(h proto.HashName, now time.Time) {
	l := c.lookups[h]
	if l == nil {
		return
	}
	for _, id := range slices.Clone(l.waiting) {
		r := c.pending[id]
		if r == nil || r.state != stLookup {
			continue
		}
		if x := c.choose(r); x != nil {
			if i := slices.Index(l.waiting, id); i >= 0 {
				l.waiting = slices.Delete(l.waiting, i, i+1)
			}
			c.forward(r, x, now)
		}
	}
	c.settle(h, now)
}

// settle ends a lookup once its result is in and its connects resolved:
// the requests still waiting go on to facilitators or DB_END.
func (c *Core) settle(h proto.HashName, now time.Time) {
	l := c.lookups[h]
	if l == nil || !l.done || l.connecting > 0 {
		return
	}
	delete(c.lookups, h)
	for _, id := range l.waiting {
		if r := c.pending[id]; r != nil && r.state == stLookup {
			r.state = 0 // no longer waiting on the (deleted) lookup
			c.advance(r, now)
		}
	}
}

// HandleLookup takes providers of h found in the DHT (records already
// verified by the DHT); done says the lookup is over. Each new provider
// gets a Connect, up to MaxConnects per lookup.
func (c *Core) HandleLookup(h proto.HashName, found []proto.ProviderRecord, done bool, now time.Time) error {
	l := c.lookups[h]
	if l == nil {
		return ErrUnknownLookup
	}
	for _, p := range found {
		if p.Key != h || p.ORDB == c.cfg.Self || l.seen[p.ORDB] || l.connects >= c.cfg.MaxConnects {
			continue
		}
		l.seen[p.ORDB] = true
		l.connects++
		if circ, ok := c.byORDB[p.ORDB]; ok && c.alive(circ) {
			c.names.add(h, &ref{circ: circ, kind: relayRef, last: ^uint64(0)}, false, c.alive)
			continue
		}
		if cs := c.connects[p.ORDB]; cs != nil {
			if !slices.Contains(cs.names, h) {
				cs.names = append(cs.names, h)
				l.connecting++
			}
			continue
		}
		c.connects[p.ORDB] = &connecting{names: []proto.HashName{h}, deadline: now.Add(c.cfg.ConnectTimeout)}
		l.connecting++
		c.emit(Connect{Provider: p, HashName: h})
	}
	if done {
		l.done = true
	}
	c.wake(h, now)
	return nil
}

// HandleConnect reports the circuit built to provider (ok), or that it
// failed. The new circuit is a neighbour ORDB and a relay reference for
// every hash_name the provider was found for. On ErrUnknownConnect (it
// timed out meanwhile) the shell closes the circuit.
func (c *Core) HandleConnect(provider proto.NodeID, circ CircuitID, ok bool, now time.Time) error {
	cs := c.connects[provider]
	if cs == nil || (ok && circ == 0) {
		return ErrUnknownConnect
	}
	delete(c.connects, provider)
	if ok {
		c.AddNeighbour(circ, now)
		c.circs[circ].provider = provider
		c.byORDB[provider] = circ
	}
	for _, h := range cs.names {
		if l := c.lookups[h]; l != nil && l.connecting > 0 {
			l.connecting--
		}
		// No STORE for a name found in the DHT: its provider is there
		// already, and naming this ORDB too would only add a hop.
		if ok {
			c.names.add(h, &ref{circ: circ, kind: relayRef, last: ^uint64(0)}, false, c.alive)
		}
	}
	for _, h := range cs.names {
		c.wake(h, now)
	}
	return nil
}

// HandleFacilitator reports the facilitators' answer to request id: ok
// with the circuit their answers will come on, or not.
func (c *Core) HandleFacilitator(id uint64, circ CircuitID, ok bool, now time.Time) error {
	r := c.pending[id]
	if r == nil || r.state != stFacilitator || r.down != 0 || (ok && (circ == 0 || circ == r.up)) {
		return ErrUnknownRequest
	}
	if !ok {
		c.finish(r, true)
		return nil
	}
	c.open(circ)
	r.down = circ
	r.deadline = now.Add(c.cfg.FacilitatorTimeout)
	return nil
}

// HandleAnswer takes a message that came back on circuit from for the
// forwarded request id: DB_CONNECTED, DB_PROOF or DB_DATA. It is delivered
// to the requester when it fits the query; a wrong answer counts as a
// failure of the reference. A delivered msg is carried as it came: its
// byte slices must stay valid until the shell has drained Ready.
func (c *Core) HandleAnswer(from CircuitID, id uint64, msg proto.DBMessage, now time.Time) error {
	r := c.pending[id]
	if r == nil || r.down != from || from == 0 || (r.state != stForwarded && r.state != stFacilitator && r.state != stAnswering) {
		return ErrUnknownRequest
	}
	complete, fits := false, false
	switch m := msg.(type) {
	case proto.DBConnected:
		if !r.q.WantsDescriptor() || r.state == stAnswering {
			break
		}
		if r.downRef == nil {
			// From facilitators: BitTorrent content is named by its
			// infohash, which the requester checks against the info
			// dictionary; nothing here to verify it with.
			fits, complete = true, true
		} else if content.HashNameOf(m) == r.q.HashName && content.CheckDescriptor(m) == nil {
			fits, complete = true, true
			c.learnDescriptor(r.q.HashName, m)
		}
	case proto.DBProof:
		fits = !r.q.WantsDescriptor() && !r.sawProof && uint64(m.Chunk) == r.nextChunk && m.NbChunks > 0 &&
			uint64(m.Chunk)+uint64(m.NbChunks) <= uint64(r.q.Chunk)+uint64(r.q.NbChunks)
		r.sawProof = fits
	case proto.DBData:
		n := uint64(m.NbChunks())
		fits = r.sawProof && uint64(m.Chunk) == r.nextChunk && n > 0 &&
			uint64(m.Chunk)+n <= uint64(r.q.Chunk)+uint64(r.q.NbChunks)
		if fits {
			r.sawProof = false
			r.nextChunk += n
			complete = r.nextChunk == uint64(r.q.Chunk)+uint64(r.q.NbChunks)
		}
	default:
		return fmt.Errorf("%w: %T is not an answer", ErrUnknownRequest, msg)
	}
	if !fits {
		c.cancelDown(r)
		if r.state == stAnswering {
			// Part of the answer is out: the requester gets the rest
			// by asking again, after this DB_END. The reference that
			// broke off its answer gets a strike like one that failed
			// before answering, or a holder answering every query with
			// a well-shaped first message and junk after would stay in
			// the list for ever.
			if x := r.downRef; x != nil {
				if e := c.names.get(r.q.HashName); e != nil {
					c.names.strike(e, x)
				}
			}
			c.emit(SendEnd{Circuit: r.up, RequestID: id, Reason: proto.DBEndDestroyed})
			c.drop(r)
			return nil
		}
		c.downFailed(r, proto.DBEndDestroyed, now)
		return nil
	}
	c.emit(Deliver{Circuit: r.up, RequestID: id, Msg: msg})
	if complete {
		// Only a whole answer clears a reference's strikes.
		if r.downRef != nil {
			r.downRef.strikes = 0
		}
		c.drop(r)
		return nil
	}
	r.state = stAnswering
	r.deadline = now.Add(c.cfg.AnswerLinger)
	return nil
}

// learnDescriptor keeps what a verified descriptor says of h.
func (c *Core) learnDescriptor(h proto.HashName, d proto.DBConnected) {
	e := c.names.get(h)
	if e == nil {
		return
	}
	e.verified, e.size, e.typ, e.live = true, d.Size, d.Type, d.Flags&proto.FlagLive != 0
}

// HandleEnd takes a DB_END received on circuit from for request id. From
// the requester it cancels the request (downstream gets DB_END FINISHED);
// from downstream before any answer it tries the next reference; after
// answers it closes the route.
func (c *Core) HandleEnd(from CircuitID, id uint64, reason proto.DBEndReason, now time.Time) error {
	r := c.pending[id]
	if r == nil || from == 0 {
		return ErrUnknownRequest
	}
	switch from {
	case r.up:
		c.cancelDown(r)
		c.drop(r)
	case r.down:
		if r.state == stAnswering {
			c.drop(r)
			return nil
		}
		c.downFailed(r, reason, now)
	default:
		return ErrUnknownRequest
	}
	return nil
}

// CircuitClosed forgets circuit id: requests it asked are cancelled
// downstream, requests forwarded on it try their next reference. Its list
// entries stay until they are met (the lists are not maintained when
// circuits break).
func (c *Core) CircuitClosed(id CircuitID, now time.Time) {
	ci := c.circs[id]
	if ci == nil {
		return
	}
	delete(c.circs, id)
	c.names.circuitClosed(id)
	if i := slices.Index(c.nbrs, id); i >= 0 {
		c.nbrs = slices.Delete(c.nbrs, i, i+1)
	}
	if ci.provider != (proto.NodeID{}) && c.byORDB[ci.provider] == id {
		delete(c.byORDB, ci.provider)
	}
	for _, rid := range c.sortedPending() {
		r := c.pending[rid]
		if r == nil {
			continue
		}
		switch {
		case r.up == id:
			c.cancelDown(r)
			c.drop(r)
		case r.down == id && r.state == stAnswering:
			c.drop(r)
		case r.down == id:
			c.downFailed(r, proto.DBEndDestroyed, now)
		}
	}
}

func (c *Core) sortedPending() []uint64 {
	ids := make([]uint64, 0, len(c.pending))
	for id := range c.pending {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Tick expires relayed IDs and times out forwards, lookups, connects,
// facilitators and whole requests.
func (c *Core) Tick(now time.Time) {
	c.relayed.expire(now)
	for _, id := range c.sortedPending() {
		r := c.pending[id]
		if r == nil {
			continue
		}
		switch {
		case r.state == stAnswering:
			if !now.Before(r.deadline) {
				c.cancelDown(r)
				c.drop(r)
			}
		case !now.Before(r.expires):
			c.cancelDown(r)
			c.finish(r, true)
		case (r.state == stForwarded || r.state == stFacilitator) && !now.Before(r.deadline):
			c.cancelDown(r)
			c.downFailed(r, proto.DBEndDestroyed, now)
		}
	}
	var hs []proto.HashName
	for h, l := range c.lookups {
		if !l.done && !now.Before(l.deadline) {
			hs = append(hs, h)
		}
	}
	var ps []proto.NodeID
	for p, cs := range c.connects {
		if !now.Before(cs.deadline) {
			ps = append(ps, p)
		}
	}
	slices.SortFunc(ps, func(a, b proto.NodeID) int { return compareID(a[:], b[:]) })
	for _, p := range ps {
		_ = c.HandleConnect(p, 0, false, now)
	}
	slices.SortFunc(hs, func(a, b proto.HashName) int { return compareID(a[:], b[:]) })
	for _, h := range hs {
		if l := c.lookups[h]; l != nil {
			l.done = true
			c.settle(h, now)
		}
	}
}

func compareID(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// NextDeadline is the earliest time Tick has work (zero if none).
func (c *Core) NextDeadline() time.Time {
	var t time.Time
	early := func(d time.Time) {
		if t.IsZero() || d.Before(t) {
			t = d
		}
	}
	for _, r := range c.pending {
		switch r.state {
		case stAnswering:
			early(r.deadline)
		case stForwarded, stFacilitator:
			early(r.deadline)
			early(r.expires)
		default:
			early(r.expires)
		}
	}
	for _, l := range c.lookups {
		if !l.done {
			early(l.deadline)
		}
	}
	for _, cs := range c.connects {
		early(cs.deadline)
	}
	if len(c.relayed.fifo) > 0 {
		early(c.relayed.fifo[0].until)
	}
	return t
}

// Pending is the number of requests being relayed.
func (c *Core) Pending() int { return len(c.pending) }

// Relayed is the number of request IDs remembered as relayed.
func (c *Core) Relayed() int { return c.relayed.len() }

// Names is the number of hash_names with lists.
func (c *Core) Names() int { return len(c.names.m) }

// RefInfo describes one list entry, for status pages and tests.
type RefInfo struct {
	Circuit     CircuitID
	Relay       bool // another ORDB (counter + 1) rather than a holder
	P           uint8
	Facilitator bool
	Strikes     uint8
	First, Last uint64 // streams: chunk indexes held
}

// Refs returns h's OR_files_P and OR_streams_P lists in rotation order
// (the next one used first), including entries on closed circuits not yet
// met.
func (c *Core) Refs(h proto.HashName) (files, streams []RefInfo) {
	e := c.names.get(h)
	if e == nil {
		return nil, nil
	}
	conv := func(l []*ref) []RefInfo {
		out := make([]RefInfo, len(l))
		for i, x := range l {
			out[i] = RefInfo{Circuit: x.circ, Relay: x.kind == relayRef, P: x.p, Facilitator: x.facilitator,
				Strikes: x.strikes, First: x.first, Last: x.last}
		}
		return out
	}
	return conv(e.files), conv(e.streams)
}
