package ordb

import (
	"crypto/ed25519"
	"errors"
	"reflect"
	"testing"
	"time"

	"veil/chunkstore/content"
	"veil/proto"
)

var t0 = time.Unix(1_700_000_000, 0)

// seedMap is a Seeds for tests: the chunks [lo, hi) of each name held, and
// its descriptor.
type seedMap map[proto.HashName][2]uint32

func (s seedMap) Has(h proto.HashName, first uint32, n uint16) bool {
	r, ok := s[h]
	if !ok {
		return false
	}
	if n == 0 {
		return first == 0
	}
	return first >= r[0] && first < r[1]
}

func hn(b byte) proto.HashName { return proto.HashName{0: b, 19: 0x5a} }

func nodeID(b byte) proto.NodeID { return proto.NodeID{0: b, 19: 0xa5} }

func newTestCore(t testing.TB, seeds Seeds, mod func(*Config)) *Core {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Self = nodeID(0xee)
	if mod != nil {
		mod(&cfg)
	}
	c, err := NewCore(cfg, seeds)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// only returns the actions of type T.
func only[T Action](acts []Action) []T {
	var out []T
	for _, a := range acts {
		if x, ok := a.(T); ok {
			out = append(out, x)
		}
	}
	return out
}

func wantActions(t *testing.T, got []Action, want ...Action) {
	t.Helper()
	if len(want) == 0 && len(got) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("actions:\n got  %#v\n want %#v", got, want)
	}
}

func query(h proto.HashName, chunk uint32, n uint16, counter uint8, id uint64) proto.DBQuery {
	return proto.DBQuery{HashName: h, Chunk: chunk, NbChunks: n, Counter: counter, RequestID: id}
}

func unavailable(c CircuitID, id uint64) SendEnd {
	return SendEnd{Circuit: c, RequestID: id, Reason: proto.DBEndUnavailable}
}

// holder adds circuit c as a peer holding h (DB_INFO P=3) and drains.
func holder(t *testing.T, c *Core, circ CircuitID, h proto.HashName) {
	t.Helper()
	if err := c.HandleInfo(circ, proto.DBInfo{HashName: h, P: 3}, t0); err != nil {
		t.Fatal(err)
	}
	c.Ready()
}

const (
	req  CircuitID = 100 // the requester's circuit
	req2 CircuitID = 101
)

// The decision for one DB_QUERY, in the Peersm specification's order.
func TestCoreDecision(t *testing.T) {
	h, other := hn(1), hn(2)
	seeds := seedMap{h: {10, 20}}
	tests := []struct {
		name  string
		q     proto.DBQuery
		setup func(*Core)
		mod   func(*Config)
		want  []Action
	}{
		{name: "counter at MaxCounter ends", q: query(h, 10, 1, proto.MaxCounter, 1),
			want: []Action{unavailable(req, 1)}},
		{name: "counter past MaxCounter ends", q: query(h, 10, 1, 200, 1),
			want: []Action{unavailable(req, 1)}},
		{name: "descriptor seeded: served", q: query(h, 0, 0, 3, 1),
			want: []Action{ServeLocal{Circuit: req, Query: query(h, 0, 0, 3, 1)}}},
		{name: "chunks seeded: served", q: query(h, 12, 40, 0, 1),
			want: []Action{ServeLocal{Circuit: req, Query: query(h, 12, 40, 0, 1)}}},
		{name: "chunk nb with nb chunks 0 is no query", q: query(h, 7, 0, 0, 1),
			want: []Action{unavailable(req, 1)}},
		{name: "holder listed: forwarded, counter kept", q: query(other, 3, 5, 2, 1),
			setup: func(c *Core) { holder(t, c, 7, other) },
			want:  []Action{Forward{Circuit: 7, Query: query(other, 3, 5, 2, 1)}}},
		{name: "relay listed: forwarded, counter + 1", q: query(other, 3, 5, 2, 1),
			setup: func(c *Core) { c.AddNeighbour(8, t0); c.HandleAnnounce(8, Announce{HashName: other}, t0); c.Ready() },
			want:  []Action{Forward{Circuit: 8, Query: query(other, 3, 5, 3, 1)}}},
		{name: "relay would get MaxCounter: not used; no lookup either", q: query(other, 3, 5, 4, 1),
			setup: func(c *Core) { c.AddNeighbour(8, t0); c.HandleAnnounce(8, Announce{HashName: other}, t0); c.Ready() },
			want:  []Action{AskFacilitator{Query: query(other, 3, 5, 4, 1)}}},
		{name: "nothing listed: FIND_VALUE", q: query(other, 3, 5, 0, 1),
			want: []Action{Lookup{HashName: other}}},
		{name: "nothing listed, counter 4, no facilitators: DB_END", q: query(other, 3, 5, 4, 1),
			mod:  func(c *Config) { c.Facilitators = false },
			want: []Action{unavailable(req, 1)}},
		{name: "never forwarded back to the circuit that asked", q: query(other, 3, 5, 4, 1),
			setup: func(c *Core) { holder(t, c, req, other) },
			mod:   func(c *Config) { c.Facilitators = false },
			want:  []Action{unavailable(req, 1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCore(t, seeds, tt.mod)
			if tt.setup != nil {
				tt.setup(c)
			}
			c.HandleQuery(req, tt.q, t0)
			wantActions(t, c.Ready(), tt.want...)
		})
	}
}

// Each reference used goes to the end of the list; a closed circuit is
// skipped and dropped only when it is met.
func TestCoreRotation(t *testing.T) {
	h := hn(1)
	c := newTestCore(t, nil, nil)
	for _, circ := range []CircuitID{1, 2, 3} {
		holder(t, c, circ, h)
	}
	var got []CircuitID
	id := uint64(1)
	ask := func() {
		c.HandleQuery(req, query(h, 0, 1, 0, id), t0)
		fw := only[Forward](c.Ready())
		if len(fw) != 1 {
			t.Fatalf("query %d: %d forwards", id, len(fw))
		}
		got = append(got, fw[0].Circuit)
		// The holder answers, so the request is done.
		if err := c.HandleEnd(req, id, proto.DBEndFinished, t0); err != nil {
			t.Fatal(err)
		}
		c.Ready()
		id++
	}
	for range 5 {
		ask()
	}
	if want := []CircuitID{1, 2, 3, 1, 2}; !reflect.DeepEqual(got, want) {
		t.Fatalf("forwarded to %v, want %v", got, want)
	}
	files, _ := c.Refs(h)
	if order := refCircuits(files); !reflect.DeepEqual(order, []CircuitID{3, 1, 2}) {
		t.Fatalf("list order %v, want [3 1 2]", order)
	}
	c.CircuitClosed(1, t0)
	if files, _ := c.Refs(h); len(files) != 3 {
		t.Fatalf("closing a circuit changed the list: %v", refCircuits(files))
	}
	got = nil
	for range 3 {
		ask()
	}
	if want := []CircuitID{3, 2, 3}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after closing 1: forwarded to %v, want %v", got, want)
	}
	if files, _ := c.Refs(h); !reflect.DeepEqual(refCircuits(files), []CircuitID{2, 3}) {
		t.Fatalf("list %v, want [2 3] (1 dropped when met)", refCircuits(files))
	}
}

func refCircuits(l []RefInfo) []CircuitID {
	var out []CircuitID
	for _, r := range l {
		out = append(out, r.Circuit)
	}
	return out
}

// A request ID already relayed is answered DB_END at once; once the ID
// expired it is relayed again. The set stays within MaxRelayed.
func TestCoreRelayedIDs(t *testing.T) {
	h := hn(1)
	c := newTestCore(t, nil, func(c *Config) { c.MaxRelayed = 16; c.RelayedTTL = time.Minute })
	holder(t, c, 1, h)
	holder(t, c, 2, h)
	c.HandleQuery(req, query(h, 0, 1, 0, 42), t0)
	wantActions(t, c.Ready(), Forward{Circuit: 1, Query: query(h, 0, 1, 0, 42)})
	// The same ID again, from elsewhere (a loop), while pending.
	c.HandleQuery(req2, query(h, 0, 1, 1, 42), t0)
	wantActions(t, c.Ready(), unavailable(req2, 42))
	// Done, then asked again within the TTL: still dropped.
	if err := c.HandleEnd(1, 42, proto.DBEndUnavailable, t0); err != nil {
		t.Fatal(err)
	}
	wantActions(t, c.Ready(), Forward{Circuit: 2, Query: query(h, 0, 1, 0, 42)})
	c.HandleEnd(req, 42, proto.DBEndFinished, t0)
	c.Ready()
	c.HandleQuery(req2, query(h, 0, 1, 0, 42), t0.Add(30*time.Second))
	wantActions(t, c.Ready(), unavailable(req2, 42))
	later := t0.Add(61 * time.Second)
	c.Tick(later)
	if c.Relayed() != 0 {
		t.Fatalf("%d relayed IDs after the TTL", c.Relayed())
	}
	c.HandleQuery(req2, query(h, 0, 1, 0, 42), later)
	if fw := only[Forward](c.Ready()); len(fw) != 1 {
		t.Fatal("an expired ID is not relayed again")
	}
	for id := range uint64(1000) {
		c.HandleQuery(req, query(hn(9), 0, 1, 0, 1000+id), later)
		c.HandleEnd(req, 1000+id, proto.DBEndFinished, later)
		if c.Relayed() > 16 {
			t.Fatalf("relayed set holds %d > 16", c.Relayed())
		}
	}
}

// No reference: FIND_VALUE; the first provider connected gets the query
// with counter + 1; later providers join the list but get no second copy.
func TestCoreLookupThenForward(t *testing.T) {
	h := hn(1)
	c := newTestCore(t, nil, nil)
	c.HandleQuery(req, query(h, 5, 10, 1, 7), t0)
	wantActions(t, c.Ready(), Lookup{HashName: h})
	// A second request for the same name joins the lookup.
	c.HandleQuery(req2, query(h, 20, 10, 2, 8), t0)
	wantActions(t, c.Ready())

	self := proto.ProviderRecord{Key: h, ORDB: nodeID(0xee)}
	p1 := proto.ProviderRecord{Key: h, ORDB: nodeID(1)}
	p2 := proto.ProviderRecord{Key: h, ORDB: nodeID(2)}
	wrong := proto.ProviderRecord{Key: hn(3), ORDB: nodeID(3)}
	if err := c.HandleLookup(h, []proto.ProviderRecord{self, p1, wrong, p2, p1}, false, t0); err != nil {
		t.Fatal(err)
	}
	wantActions(t, c.Ready(), Connect{Provider: p1, HashName: h}, Connect{Provider: p2, HashName: h})
	if err := c.HandleLookup(h, nil, true, t0); err != nil {
		t.Fatal(err)
	}
	wantActions(t, c.Ready())
	if err := c.HandleConnect(nodeID(2), 50, true, t0); err != nil {
		t.Fatal(err)
	}
	wantActions(t, c.Ready(),
		Forward{Circuit: 50, Query: query(h, 5, 10, 2, 7)},
		Forward{Circuit: 50, Query: query(h, 20, 10, 3, 8)})
	if err := c.HandleConnect(nodeID(1), 51, true, t0); err != nil {
		t.Fatal(err)
	}
	wantActions(t, c.Ready()) // already sent
	files, _ := c.Refs(h)
	if got := refCircuits(files); !reflect.DeepEqual(got, []CircuitID{50, 51}) || !files[0].Relay {
		t.Fatalf("list after the lookup: %+v", files)
	}
	if err := c.HandleConnect(nodeID(1), 52, true, t0); !errors.Is(err, ErrUnknownConnect) {
		t.Fatalf("second connect result: %v", err)
	}
}

// A lookup that finds nothing goes to facilitators; their refusal ends the
// request.
func TestCoreLookupEmptyThenFacilitator(t *testing.T) {
	h := hn(1)
	c := newTestCore(t, nil, nil)
	c.HandleQuery(req, query(h, 5, 10, 0, 7), t0)
	c.Ready()
	c.HandleLookup(h, nil, true, t0)
	wantActions(t, c.Ready(), AskFacilitator{Query: query(h, 5, 10, 0, 7)})
	if err := c.HandleFacilitator(7, 0, false, t0); err != nil {
		t.Fatal(err)
	}
	wantActions(t, c.Ready(), unavailable(req, 7))
	if c.Pending() != 0 {
		t.Fatal("request still pending")
	}

	// Accepted: the facilitator's answers are routed back.
	c.HandleQuery(req, query(h, 0, 1, 0, 8), t0)
	c.HandleLookup(h, nil, true, t0)
	c.Ready()
	if err := c.HandleFacilitator(8, 60, true, t0); err != nil {
		t.Fatal(err)
	}
	proof := proto.DBProof{Chunk: 0, NbChunks: 1}
	data := proto.DBData{Chunk: 0, Data: make([]byte, proto.ChunkSize)}
	c.HandleAnswer(60, 8, proof, t0)
	c.HandleAnswer(60, 8, data, t0)
	wantActions(t, c.Ready(), Deliver{Circuit: req, RequestID: 8, Msg: proof}, Deliver{Circuit: req, RequestID: 8, Msg: data})
	if c.Pending() != 0 {
		t.Fatal("a complete answer left the request pending")
	}

	// A facilitator's descriptor is not checked against the hash_name
	// (an infohash names BitTorrent content): the requester checks it.
	c.HandleQuery(req, query(h, 0, 0, 0, 9), t0)
	c.HandleLookup(h, nil, true, t0)
	c.Ready()
	c.HandleFacilitator(9, 61, true, t0)
	desc := proto.DBConnected{Size: 5, Type: "application/x-bittorrent"}
	if err := c.HandleAnswer(61, 9, desc, t0); err != nil {
		t.Fatal(err)
	}
	wantActions(t, c.Ready(), Deliver{Circuit: req, RequestID: 9, Msg: desc})
}

// DESTROYED (or UNAVAILABLE from a holder) tries the next reference and
// strikes the one that failed; with none left the requester gets DB_END.
func TestCoreDestroyedRetriesNext(t *testing.T) {
	h := hn(1)
	c := newTestCore(t, nil, func(c *Config) { c.Facilitators = false })
	holder(t, c, 1, h)
	holder(t, c, 2, h)
	q := query(h, 0, 4, 4, 9) // counter 4: no lookup after the list
	c.HandleQuery(req, q, t0)
	wantActions(t, c.Ready(), Forward{Circuit: 1, Query: q})
	if err := c.HandleEnd(1, 9, proto.DBEndDestroyed, t0); err != nil {
		t.Fatal(err)
	}
	wantActions(t, c.Ready(), Forward{Circuit: 2, Query: q})
	c.HandleEnd(2, 9, proto.DBEndUnavailable, t0)
	wantActions(t, c.Ready(), unavailable(req, 9))
	// DESTROYED costs a strike; UNAVAILABLE for chunks may be honest (a
	// partial holder, a range past the end) and costs none.
	files, _ := c.Refs(h)
	if got := []uint8{files[0].Strikes, files[1].Strikes}; files[0].Circuit != 1 || !reflect.DeepEqual(got, []uint8{1, 0}) {
		t.Fatalf("list %+v, want circuit 1 with one strike, 2 with none", files)
	}
	// A late answer from a reference given up on is not delivered.
	if err := c.HandleAnswer(1, 9, proto.DBProof{NbChunks: 1}, t0); !errors.Is(err, ErrUnknownRequest) {
		t.Fatalf("late answer: %v", err)
	}
	wantActions(t, c.Ready())
}

// FINISHED from the requester cancels the forwarded request downstream;
// what comes back afterwards goes nowhere.
func TestCoreFinishedCancelsDownstream(t *testing.T) {
	h := hn(1)
	c := newTestCore(t, nil, nil)
	holder(t, c, 1, h)
	c.HandleQuery(req, query(h, 0, 4, 0, 9), t0)
	c.Ready()
	if err := c.HandleEnd(req, 9, proto.DBEndFinished, t0); err != nil {
		t.Fatal(err)
	}
	wantActions(t, c.Ready(), SendEnd{Circuit: 1, RequestID: 9, Reason: proto.DBEndFinished})
	if c.Pending() != 0 {
		t.Fatal("cancelled request still pending")
	}
	if err := c.HandleAnswer(1, 9, proto.DBProof{NbChunks: 1}, t0); !errors.Is(err, ErrUnknownRequest) {
		t.Fatalf("answer after cancel: %v", err)
	}
	wantActions(t, c.Ready())

	// The requester's circuit closing does the same.
	c.HandleQuery(req, query(h, 0, 4, 0, 10), t0)
	c.Ready()
	c.CircuitClosed(req, t0)
	wantActions(t, c.Ready(), SendEnd{Circuit: 1, RequestID: 10, Reason: proto.DBEndFinished})
}

// A forwarded descriptor query: a descriptor that hashes to the name is
// delivered and teaches the ORDB the size (used to refuse chunks past the
// end); a forged one is a failure of the reference.
func TestCoreDescriptorAnswer(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	d, err := content.NewDescriptor(priv, 10*proto.ChunkSize, "video/mp4", content.Hash{1}, 1_700_000_000)
	if err != nil {
		t.Fatal(err)
	}
	h := content.HashNameOf(d)
	forged := d
	forged.Size = 1

	c := newTestCore(t, nil, func(c *Config) { c.Facilitators = false })
	holder(t, c, 1, h)
	holder(t, c, 2, h)
	c.HandleQuery(req, query(h, 0, 0, 4, 5), t0)
	c.Ready()
	c.HandleAnswer(1, 5, forged, t0)
	wantActions(t, c.Ready(),
		SendEnd{Circuit: 1, RequestID: 5, Reason: proto.DBEndFinished},
		Forward{Circuit: 2, Query: query(h, 0, 0, 4, 5)})
	c.HandleAnswer(2, 5, d, t0)
	wantActions(t, c.Ready(), Deliver{Circuit: req, RequestID: 5, Msg: d})
	if c.Pending() != 0 {
		t.Fatal("descriptor answer left the request pending")
	}
	// Size known: chunk 10 of a 10-chunk content is past the end.
	c.HandleQuery(req, query(h, 10, 1, 0, 6), t0)
	wantActions(t, c.Ready(), unavailable(req, 6))
	c.HandleQuery(req, query(h, 9, 1, 0, 7), t0)
	if len(only[Forward](c.Ready())) != 1 {
		t.Fatal("last chunk not forwarded")
	}
}

// Data answers are checked against the query: the wrong range is not
// delivered; a partial answer keeps the route open until AnswerLinger.
func TestCoreDataAnswers(t *testing.T) {
	h := hn(1)
	c := newTestCore(t, nil, nil)
	holder(t, c, 1, h)
	holder(t, c, 2, h)
	c.HandleQuery(req, query(h, 10, 4, 0, 5), t0)
	c.Ready()
	// DB_DATA without its proof, then a proof for another range.
	c.HandleAnswer(1, 5, proto.DBData{Chunk: 10, Data: make([]byte, proto.ChunkSize)}, t0)
	wantActions(t, c.Ready(),
		SendEnd{Circuit: 1, RequestID: 5, Reason: proto.DBEndFinished},
		Forward{Circuit: 2, Query: query(h, 10, 4, 0, 5)})
	p := proto.DBProof{Chunk: 10, NbChunks: 2}
	d := proto.DBData{Chunk: 10, Data: make([]byte, 2*proto.ChunkSize)}
	c.HandleAnswer(2, 5, p, t0)
	c.HandleAnswer(2, 5, d, t0)
	wantActions(t, c.Ready(), Deliver{Circuit: req, RequestID: 5, Msg: p}, Deliver{Circuit: req, RequestID: 5, Msg: d})
	if c.Pending() != 1 {
		t.Fatal("partial answer: route closed early")
	}
	c.Tick(t0.Add(c.cfg.AnswerLinger))
	wantActions(t, c.Ready(), SendEnd{Circuit: 2, RequestID: 5, Reason: proto.DBEndFinished})
	if c.Pending() != 0 {
		t.Fatal("lingering route not closed")
	}
}

// Timeouts: a silent reference is cancelled and the next one tried; a
// request that nobody answers ends by RequestTimeout whatever happens.
func TestCoreTimeouts(t *testing.T) {
	h := hn(1)
	c := newTestCore(t, nil, func(c *Config) { c.Facilitators = false })
	holder(t, c, 1, h)
	c.HandleQuery(req, query(h, 0, 1, 3, 5), t0)
	c.Ready()
	at := t0.Add(c.cfg.ForwardTimeout)
	if nd := c.NextDeadline(); !nd.Equal(at) {
		t.Fatalf("NextDeadline %v, want %v", nd, at)
	}
	c.Tick(at)
	wantActions(t, c.Ready(),
		SendEnd{Circuit: 1, RequestID: 5, Reason: proto.DBEndFinished},
		Lookup{HashName: h})
	// The lookup never answers.
	c.Tick(at.Add(c.cfg.LookupTimeout))
	wantActions(t, c.Ready(), unavailable(req, 5))
	if c.Pending() != 0 {
		t.Fatal("pending after the lookup timed out")
	}

	// A connect that never completes, with a lookup that never ends.
	c.HandleQuery(req, query(hn(2), 0, 1, 0, 6), t0)
	c.HandleLookup(hn(2), []proto.ProviderRecord{{Key: hn(2), ORDB: nodeID(1)}}, false, t0)
	c.Ready()
	for now := t0; c.Pending() > 0; now = now.Add(time.Second) {
		if now.After(t0.Add(c.cfg.RequestTimeout)) {
			t.Fatal("request outlived RequestTimeout")
		}
		c.Tick(now)
	}
	if got := only[SendEnd](c.Ready()); len(got) != 1 || got[0] != unavailable(req, 6) {
		t.Fatalf("ends %v", got)
	}
}

// DB_INFO: a new name is STOREd; neighbours hear about it once; a name a
// neighbour told us about is not told back; announcements are not passed
// on; P rising STOREs again.
func TestCorePropagation(t *testing.T) {
	h, g := hn(1), hn(2)
	c := newTestCore(t, nil, nil)
	c.AddNeighbour(10, t0)
	c.AddNeighbour(11, t0)
	if err := c.HandleInfo(1, proto.DBInfo{HashName: h, P: 0}, t0); err != nil {
		t.Fatal(err)
	}
	wantActions(t, c.Ready(), Store{HashName: h, P: 0},
		Propagate{To: 10, HashName: h}, Propagate{To: 11, HashName: h})
	c.HandleInfo(2, proto.DBInfo{HashName: h, P: 0}, t0)
	wantActions(t, c.Ready()) // neighbours know it already
	c.HandleInfo(2, proto.DBInfo{HashName: h, P: 2}, t0)
	wantActions(t, c.Ready(), Store{HashName: h, P: 2})

	if err := c.HandleAnnounce(10, Announce{HashName: g, Size: 5, Type: "a/b"}, t0); err != nil {
		t.Fatal(err)
	}
	wantActions(t, c.Ready(), Store{HashName: g, P: 0}) // not passed on to 11
	c.HandleInfo(3, proto.DBInfo{HashName: g, P: 3}, t0)
	wantActions(t, c.Ready(), Store{HashName: g, P: 3}, Propagate{To: 11, HashName: g})
	// A new neighbour is not sent everything known: only later news.
	c.AddNeighbour(12, t0)
	wantActions(t, c.Ready())
	if err := c.HandleAnnounce(1, Announce{HashName: g}, t0); !errors.Is(err, ErrNotNeighbour) {
		t.Fatalf("announcement from a peer circuit: %v", err)
	}
}

// Live streams: the descriptor query goes to a holder of the chunk two
// windows behind the newest, which the Forward carries; a chunk query goes
// to a holder of that chunk.
func TestCoreLiveStream(t *testing.T) {
	h := hn(1)
	c := newTestCore(t, nil, func(c *Config) { c.WindowChunks = 100 })
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.HandleStreamInfo(1, StreamInfo{HashName: h, First: 0, Last: 150, Type: "video/webm"}, t0))
	must(c.HandleStreamInfo(2, StreamInfo{HashName: h, First: 400, Last: 999, Type: "video/webm"}, t0))
	must(c.HandleStreamInfo(3, StreamInfo{HashName: h, First: 700, Last: 999, Type: "video/webm"}, t0))
	c.Ready()
	c.HandleQuery(req, query(h, 0, 0, 0, 1), t0)
	wantActions(t, c.Ready(), Forward{Circuit: 2, Query: query(h, 0, 0, 0, 1), LiveStart: 800, HasLiveStart: true})
	c.HandleQuery(req, query(h, 100, 10, 0, 2), t0)
	wantActions(t, c.Ready(), Forward{Circuit: 1, Query: query(h, 100, 10, 0, 2)})
	c.HandleQuery(req, query(h, 900, 10, 0, 3), t0)
	wantActions(t, c.Ready(), Forward{Circuit: 3, Query: query(h, 900, 10, 0, 3)})
	c.HandleQuery(req, query(h, 901, 10, 0, 4), t0)
	wantActions(t, c.Ready(), Forward{Circuit: 2, Query: query(h, 901, 10, 0, 4)}) // rotated
	if err := c.HandleStreamInfo(4, StreamInfo{HashName: h, First: 9, Last: 3}, t0); !errors.Is(err, ErrBadInfo) {
		t.Fatalf("inverted range: %v", err)
	}
}

// Hostile advertisements never poison the lists: a bad P is refused, one
// circuit has one entry per name and a bounded number of names, a full
// list keeps its healthy entries, and a holder that never serves what it
// advertised is dropped after MaxStrikes.
func TestCoreHostileInfo(t *testing.T) {
	h := hn(1)
	c := newTestCore(t, nil, func(c *Config) {
		c.MaxRefsPerName, c.MaxNamesPerCircuit, c.MaxNames, c.Facilitators = 3, 5, 20, false
	})
	if err := c.HandleInfo(1, proto.DBInfo{HashName: h, P: 7}, t0); !errors.Is(err, ErrBadInfo) {
		t.Fatalf("P 7: %v", err)
	}
	if c.Names() != 0 || len(c.Ready()) != 0 {
		t.Fatal("a bad DB_INFO changed the lists")
	}
	for range 10 {
		c.HandleInfo(1, proto.DBInfo{HashName: h, P: 3}, t0)
	}
	if files, _ := c.Refs(h); len(files) != 1 {
		t.Fatalf("one circuit, %d entries", len(files))
	}
	for i := range 50 {
		c.HandleInfo(1, proto.DBInfo{HashName: hn(byte(10 + i)), P: 3}, t0)
	}
	if n := c.Names(); n != 5 {
		t.Fatalf("one circuit made %d names, want MaxNamesPerCircuit 5", n)
	}
	holder(t, c, 2, h)
	holder(t, c, 3, h)
	if err := c.HandleInfo(4, proto.DBInfo{HashName: h, P: 3}, t0); !errors.Is(err, ErrRefused) {
		t.Fatalf("fourth entry in a list of 3: %v", err)
	}
	files, _ := c.Refs(h)
	if !reflect.DeepEqual(refCircuits(files), []CircuitID{1, 2, 3}) {
		t.Fatalf("list %v", refCircuits(files))
	}
	// Circuit 1 advertised but never serves, not even the descriptor.
	for id := uint64(1); id <= 6; id++ {
		c.HandleQuery(req, query(h, 0, 0, 4, id), t0)
		for _, a := range c.Ready() {
			if f, ok := a.(Forward); ok && f.Circuit == 1 {
				c.HandleEnd(1, id, proto.DBEndUnavailable, t0)
			} else if ok {
				c.HandleEnd(req, id, proto.DBEndFinished, t0)
			}
		}
		c.Ready()
	}
	files, _ = c.Refs(h)
	if !reflect.DeepEqual(refCircuits(files), []CircuitID{2, 3}) {
		t.Fatalf("after failures: %v, want the liar gone", refCircuits(files))
	}
	// The lists' total stays bounded under many circuits and names.
	for i := range 200 {
		c.HandleInfo(CircuitID(1000+i), proto.DBInfo{HashName: hn(byte(i)), P: 1}, t0)
	}
	if c.Names() > 20 {
		t.Fatalf("%d names > MaxNames 20", c.Names())
	}
}

// Inputs that match nothing change nothing and never panic.
func TestCoreUnknownInputs(t *testing.T) {
	c := newTestCore(t, nil, nil)
	h := hn(1)
	checks := []struct {
		name string
		err  error
		want error
	}{
		{"answer", c.HandleAnswer(5, 1, proto.DBProof{NbChunks: 1}, t0), ErrUnknownRequest},
		{"answer of another type", c.HandleAnswer(5, 1, proto.DBEnd{}, t0), ErrUnknownRequest},
		{"end", c.HandleEnd(5, 1, proto.DBEndDestroyed, t0), ErrUnknownRequest},
		{"lookup", c.HandleLookup(h, nil, true, t0), ErrUnknownLookup},
		{"connect", c.HandleConnect(nodeID(1), 3, true, t0), ErrUnknownConnect},
		{"facilitator", c.HandleFacilitator(1, 3, true, t0), ErrUnknownRequest},
		{"announce", c.HandleAnnounce(3, Announce{HashName: h}, t0), ErrNotNeighbour},
		{"info on circuit 0", c.HandleInfo(0, proto.DBInfo{HashName: h}, t0), ErrBadInfo},
	}
	for _, ch := range checks {
		if !errors.Is(ch.err, ch.want) {
			t.Errorf("%s: %v, want %v", ch.name, ch.err, ch.want)
		}
	}
	c.CircuitClosed(99, t0)
	c.Tick(t0)
	wantActions(t, c.Ready())
	if c.Pending() != 0 || c.Names() != 0 {
		t.Fatal("state changed")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.MaxAttempts = 0
	if _, err := NewCore(cfg, nil); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("MaxAttempts 0: %v", err)
	}
}

// A circuit that closes under a forwarded request sends it to the next
// reference; connects that all fail send the request on to facilitators.
func TestCoreClosedAndFailedConnects(t *testing.T) {
	h := hn(1)
	c := newTestCore(t, nil, nil)
	holder(t, c, 1, h)
	holder(t, c, 2, h)
	c.HandleQuery(req, query(h, 0, 1, 3, 5), t0)
	wantActions(t, c.Ready(), Forward{Circuit: 1, Query: query(h, 0, 1, 3, 5)})
	c.CircuitClosed(1, t0)
	wantActions(t, c.Ready(), Forward{Circuit: 2, Query: query(h, 0, 1, 3, 5)})
	if files, _ := c.Refs(h); !reflect.DeepEqual(refCircuits(files), []CircuitID{1, 2}) {
		t.Fatalf("list %v: the closed circuit 1, never met, should stay", refCircuits(files))
	}
	c.CircuitClosed(2, t0)
	wantActions(t, c.Ready(), Lookup{HashName: h})
	p1 := proto.ProviderRecord{Key: h, ORDB: nodeID(1)}
	p2 := proto.ProviderRecord{Key: h, ORDB: nodeID(2)}
	c.HandleLookup(h, []proto.ProviderRecord{p1, p2}, true, t0)
	wantActions(t, c.Ready(), Connect{Provider: p1, HashName: h}, Connect{Provider: p2, HashName: h})
	c.HandleConnect(nodeID(1), 0, false, t0)
	wantActions(t, c.Ready()) // one connect still pending
	c.HandleConnect(nodeID(2), 0, false, t0)
	wantActions(t, c.Ready(), AskFacilitator{Query: query(h, 0, 1, 3, 5)})
	if files, _ := c.Refs(h); len(files) != 0 {
		t.Fatalf("closed circuits met while choosing still listed: %v", refCircuits(files))
	}
}

// A requester cannot clear honest holders from a list by asking them for
// what they cannot have (chunks past the end, chunks a partial holder
// lacks): UNAVAILABLE for chunks costs no strike. At P = 100 % and inside
// a verified size it does.
func TestCoreQueriesCannotEvictHolders(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	d, err := content.NewDescriptor(priv, 10*proto.ChunkSize, "video/mp4", content.Hash{1}, 1_700_000_000)
	if err != nil {
		t.Fatal(err)
	}
	h := content.HashNameOf(d)
	c := newTestCore(t, nil, func(c *Config) { c.Facilitators = false })
	c.HandleInfo(1, proto.DBInfo{HashName: h, P: 1}, t0) // 50 %
	c.Ready()
	for id := uint64(1); id <= 10; id++ {
		c.HandleQuery(req, query(h, 1_000_000, 1, 4, id), t0)
		c.Ready()
		c.HandleEnd(1, id, proto.DBEndUnavailable, t0)
		wantActions(t, c.Ready(), unavailable(req, id))
	}
	if files, _ := c.Refs(h); len(files) != 1 || files[0].Strikes != 0 {
		t.Fatalf("after unanswerable queries: %+v", files)
	}
	// The descriptor verified, and the holder claims 100 %: lacking chunk 3
	// is a lie.
	c.HandleQuery(req, query(h, 0, 0, 4, 20), t0)
	c.Ready()
	c.HandleAnswer(1, 20, d, t0)
	c.HandleInfo(1, proto.DBInfo{HashName: h, P: 3}, t0)
	c.Ready()
	for id := uint64(21); id <= 22; id++ {
		c.HandleQuery(req, query(h, 3, 1, 4, id), t0)
		c.Ready()
		c.HandleEnd(1, id, proto.DBEndUnavailable, t0)
		c.Ready()
	}
	if files, _ := c.Refs(h); len(files) != 0 {
		t.Fatalf("a full holder lacking chunks stays listed: %+v", files)
	}
}
