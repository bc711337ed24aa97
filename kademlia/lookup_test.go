package kademlia

import (
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	"veil/proto"
)

// lookupWorld is a scripted network: every live node answers with the K
// IDs of the world closest to the target (itself and the asker excepted);
// dead nodes never answer; holders answer FIND_VALUE with a record.
type lookupWorld struct {
	ids     []proto.NodeID
	dead    map[proto.NodeID]bool
	holders map[proto.NodeID]bool
	k       int
}

func newLookupWorld(n int, seed uint64) *lookupWorld {
	r := seedFrom(seed)
	w := &lookupWorld{dead: map[proto.NodeID]bool{}, holders: map[proto.NodeID]bool{}, k: 8}
	for range n {
		w.ids = append(w.ids, RandomID(proto.NodeID{}, 159, r))
	}
	return w
}

func (w *lookupWorld) contact(id proto.NodeID) proto.DHTContact {
	return proto.DHTContact{ID: id, Addr: netip.MustParseAddrPort("127.0.0.1:1")}
}

func (w *lookupWorld) closest(target proto.NodeID, n int, skip func(proto.NodeID) bool) []proto.NodeID {
	var out []proto.NodeID
	for _, id := range w.ids {
		if !skip(id) {
			out = append(out, id)
		}
	}
	slices.SortFunc(out, func(a, b proto.NodeID) int {
		if proto.Closer(target, a, b) {
			return -1
		}
		return 1
	})
	return out[:min(n, len(out))]
}

// run drives l to its end, answering in FIFO order, one RPC per step,
// 10 ms apart; it checks that at most alpha RPCs are ever in flight.
func (w *lookupWorld) run(t *testing.T, l *Lookup, self proto.NodeID, alpha int, rec *proto.ProviderRecord) {
	t.Helper()
	now := testNow
	timeout := DefaultConfig().RPCTimeout
	type rpc struct {
		c        proto.DHTContact
		deadline time.Time
	}
	var inflight []rpc
	send := func(cs []proto.DHTContact) {
		for _, c := range cs {
			inflight = append(inflight, rpc{c, now.Add(timeout)})
		}
	}
	send(l.Next(now))
	for steps := 0; !l.Done(); steps++ {
		if steps > 10000 {
			t.Fatalf("lookup did not end")
		}
		if len(inflight) > alpha {
			t.Fatalf("%d RPCs in flight, alpha %d", len(inflight), alpha)
		}
		if len(inflight) == 0 {
			t.Fatalf("lookup waits with nothing in flight")
		}
		// Live nodes answer within 10 ms; only when every RPC in flight
		// is to a dead node does time run on to a deadline.
		if j := slices.IndexFunc(inflight, func(x rpc) bool { return !w.dead[x.c.ID] }); j > 0 {
			inflight[0], inflight[j] = inflight[j], inflight[0]
		}
		r := inflight[0]
		if w.dead[r.c.ID] {
			// Nothing comes back: time passes to its deadline and Tick
			// fails every RPC overdue by then.
			now = r.deadline
			inflight = slices.DeleteFunc(inflight, func(x rpc) bool { return !now.Before(x.deadline) })
			send(l.Tick(now))
			continue
		}
		inflight = inflight[1:]
		now = now.Add(10 * time.Millisecond)
		ids := w.closest(l.Target(), w.k, func(id proto.NodeID) bool { return id == r.c.ID || id == self })
		var cs []proto.DHTContact
		for _, id := range ids {
			cs = append(cs, w.contact(id))
		}
		var recs []proto.ProviderRecord
		if rec != nil && w.holders[r.c.ID] {
			recs = []proto.ProviderRecord{*rec}
		}
		send(l.Answer(r.c.ID, cs, recs, now))
	}
}

func TestLookupScenarios(t *testing.T) {
	cases := []struct {
		name       string
		nodes      int
		deadFrac   int // one node in deadFrac is dead (0: none)
		kind       LookupKind
		stop       bool
		wantAlpha  int
		wantRecord bool
		paths      int // 0: 1
	}{
		{name: "find_node converges", nodes: 500, kind: FindNode, wantAlpha: 3},
		{name: "find_node with a quarter dead", nodes: 500, deadFrac: 4, kind: FindNode, wantAlpha: 3},
		{name: "find_node half dead", nodes: 300, deadFrac: 2, kind: FindNode, wantAlpha: 3},
		{name: "find_value asks 4 at once", nodes: 500, kind: FindValue, wantAlpha: 4, wantRecord: true},
		{name: "find_value stops at the first value", nodes: 500, kind: FindValue, stop: true, wantAlpha: 4, wantRecord: true},
		{name: "tiny network", nodes: 5, kind: FindNode, wantAlpha: 3},
		{name: "find_node on 2 disjoint paths", nodes: 500, kind: FindNode, wantAlpha: 3, paths: 2},
		{name: "find_value on 3 disjoint paths, a quarter dead", nodes: 500, deadFrac: 4, kind: FindValue, wantAlpha: 4, wantRecord: true, paths: 3},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newLookupWorld(c.nodes, uint64(i))
			self, target := w.ids[0], RandomID(proto.NodeID{}, 159, seedFrom(uint64(100+i)))
			if c.deadFrac > 0 {
				for j, id := range w.ids[1:] {
					if j%c.deadFrac == 0 {
						w.dead[id] = true
					}
				}
			}
			live := func(id proto.NodeID) bool { return w.dead[id] || id == self }
			trueK := w.closest(target, 8, live)
			var rec *proto.ProviderRecord
			if c.wantRecord {
				for _, id := range trueK {
					w.holders[id] = true
				}
				rec = &proto.ProviderRecord{Key: proto.HashName(target), ORDB: trueK[0]}
			}
			cfg := DefaultConfig()
			cfg.StopOnValue = c.stop
			cfg.IDWorkBits = 0 // the world's IDs are random
			cfg.Paths = max(c.paths, 1)
			// Seeds: a few random nodes, as a fresh table would have.
			var seeds []proto.DHTContact
			for _, id := range w.ids[1:min(len(w.ids), 9)] {
				seeds = append(seeds, w.contact(id))
			}
			l := NewLookup(self, target, c.kind, seeds, cfg)
			first := l.Next(testNow)
			if len(first) != min(c.wantAlpha*cfg.Paths, len(seeds)) {
				t.Fatalf("first round sent %d RPCs, want %d", len(first), c.wantAlpha*cfg.Paths)
			}
			// Re-run from scratch through the driver.
			l = NewLookup(self, target, c.kind, seeds, cfg)
			w.run(t, l, self, c.wantAlpha*cfg.Paths, rec)
			got := l.Closest()
			for _, ct := range got {
				if w.dead[ct.ID] || ct.ID == self {
					t.Fatalf("result holds a dead node or self")
				}
			}
			if c.stop {
				if len(l.Records()) != 1 || l.Rounds() < 1 {
					t.Fatalf("stop on value: %d records, %d rounds", len(l.Records()), l.Rounds())
				}
				return
			}
			var gotIDs []proto.NodeID
			for _, ct := range got {
				gotIDs = append(gotIDs, ct.ID)
			}
			if c.deadFrac == 0 && !slices.Equal(gotIDs, trueK) {
				t.Fatalf("result is not the true K closest:\n got %v\nwant %v", gotIDs, trueK)
			}
			if c.deadFrac > 0 {
				// Every live node among the true K closest is found.
				for _, id := range trueK[:4] {
					if !slices.Contains(gotIDs, id) {
						t.Fatalf("missed live close node %v", id.Short())
					}
				}
			}
			if c.wantRecord && len(l.Records()) != 1 {
				t.Fatalf("records %d, want 1 (deduplicated)", len(l.Records()))
			}
			t.Logf("%d msgs, %d rounds", l.Msgs(), l.Rounds())
		})
	}
}

func TestLookupEdges(t *testing.T) {
	cfg := DefaultConfig()
	cfg.IDWorkBits = 0
	self := proto.NodeID{1}
	l := NewLookup(self, proto.NodeID{2}, FindNode, nil, cfg)
	if out := l.Next(testNow); len(out) != 0 || !l.Done() {
		t.Fatalf("no seeds: %d RPCs, done %v", len(out), l.Done())
	}
	a := proto.DHTContact{ID: proto.NodeID{3}, Addr: netip.MustParseAddrPort("127.0.0.1:1")}
	b := proto.DHTContact{ID: proto.NodeID{4}, Addr: netip.MustParseAddrPort("127.0.0.1:1")}
	selfC := proto.DHTContact{ID: self, Addr: a.Addr}
	noAddr := proto.DHTContact{ID: proto.NodeID{5}}
	l = NewLookup(self, proto.NodeID{2}, FindNode, []proto.DHTContact{a, selfC, noAddr, a}, cfg)
	if out := l.Next(testNow); len(out) != 1 || out[0] != a {
		t.Fatalf("seeds: self, duplicates and contacts without address must be skipped: %v", out)
	}
	// With the ID puzzle on, these made-up IDs are never asked.
	work := cfg
	work.IDWorkBits = proto.IDWorkBits
	if out := NewLookup(self, proto.NodeID{2}, FindNode, []proto.DHTContact{a, b}, work).Next(testNow); len(out) != 0 {
		t.Fatalf("contacts failing the ID puzzle asked: %v", out)
	}
	// An answer from a node never asked changes nothing.
	if out := l.Answer(b.ID, []proto.DHTContact{b}, nil, testNow); out != nil || l.Done() {
		t.Fatalf("unsolicited answer was used")
	}
	// A failure ends it; a late answer of the failed node is ignored.
	if out := l.Tick(testNow.Add(cfg.RPCTimeout)); len(out) != 0 || !l.Done() || len(l.Closest()) != 0 {
		t.Fatalf("after timeout: %v done %v", out, l.Done())
	}
	if out := l.Answer(a.ID, []proto.DHTContact{b}, nil, testNow); out != nil {
		t.Fatalf("answer after the end was used")
	}
	// Records for another key are ignored.
	l = NewLookup(self, proto.NodeID{2}, FindValue, []proto.DHTContact{a}, cfg)
	l.Next(testNow)
	l.Answer(a.ID, nil, []proto.ProviderRecord{{Key: proto.HashName{9}}}, testNow)
	if len(l.Records()) != 0 {
		t.Fatalf("record for another key kept")
	}
}

// TestLookupDisjointPaths: a colluder among the seeds answers only with
// made-up colluders closer to the target than anyone. With Paths = 2 it
// captures the path it was dealt to, and the other path still asks the
// true closest honest nodes.
func TestLookupDisjointPaths(t *testing.T) {
	w := newLookupWorld(400, 77)
	self, target := w.ids[0], RandomID(proto.NodeID{}, 159, seedFrom(777))
	// The colluder is the seed closest to the target: one path asks it
	// first, and its made-up answer fills that path's K closest.
	bad := w.closest(target, 1, func(id proto.NodeID) bool { return !slices.Contains(w.ids[1:9], id) })[0]
	colluders := map[proto.NodeID]bool{bad: true}
	honestK := w.closest(target, 8, func(id proto.NodeID) bool { return colluders[id] || id == self })
	run := func(paths int) (reached int) {
		cfg := DefaultConfig()
		cfg.IDWorkBits, cfg.Paths = 0, paths
		var seeds []proto.DHTContact
		for _, id := range w.ids[1:9] {
			seeds = append(seeds, w.contact(id))
		}
		l := NewLookup(self, target, FindNode, seeds, cfg)
		now := testNow
		queue := slices.Clone(l.Next(now)) // Next's slice is reused by the next call
		for steps := 0; len(queue) > 0 && steps < 10000; steps++ {
			c := queue[0]
			queue = queue[1:]
			now = now.Add(time.Millisecond)
			var cs []proto.DHTContact
			if colluders[c.ID] {
				for j := range 8 {
					id := target
					id[19] ^= byte(j + 1)
					colluders[id] = true
					cs = append(cs, w.contact(id))
				}
			} else {
				for _, id := range w.closest(target, 8, func(id proto.NodeID) bool { return id == c.ID || id == self || colluders[id] }) {
					cs = append(cs, w.contact(id))
				}
			}
			queue = append(queue, l.Answer(c.ID, cs, nil, now)...)
		}
		if !l.Done() {
			t.Fatalf("paths %d: lookup did not end", paths)
		}
		for _, c := range l.cands {
			if c.state == candAnswered && slices.Contains(honestK, c.contact.ID) {
				reached++
			}
		}
		return reached
	}
	// The colluder must be dealt a path of its own, not be left out.
	if got := run(2); got != len(honestK) {
		t.Fatalf("2 disjoint paths asked %d of the %d closest honest nodes", got, len(honestK))
	}
	// Without disjoint paths the same colluder captures the lookup (this
	// shows the test can fail).
	if got := run(1); got == len(honestK) {
		t.Fatalf("one path asked all %d closest honest nodes: the colluder did not capture it", got)
	}
}

// TestLookupEndWhenFilled: a bucket refresh's lookup ends at the answer
// of the K-th (or the needed) contact of the range, no later than a full
// lookup of the same target and earlier when fewer are needed.
func TestLookupEndWhenFilled(t *testing.T) {
	w := newLookupWorld(2000, 9)
	self := w.ids[0]
	cfg := DefaultConfig()
	cfg.Paths, cfg.IDWorkBits = 1, 0 // the world's IDs are random
	const bits = 4                   // a range holding ~1/16 of the world
	target := RandomID(self, IDBits-bits, seedFrom(11))
	seeds := func() []proto.DHTContact {
		var cs []proto.DHTContact
		for _, id := range w.closest(self, 8, func(id proto.NodeID) bool { return id == self }) {
			cs = append(cs, w.contact(id))
		}
		return cs
	}
	full := NewLookup(self, target, FindNode, seeds(), cfg)
	w.run(t, full, self, cfg.Alpha, nil)
	for _, need := range []int{cfg.K, 3} {
		l := NewLookup(self, target, FindNode, seeds(), cfg)
		l.EndWhenFilled(bits, need) // the range of bucket IDBits-bits: IDs sharing its first bits bits
		w.run(t, l, self, cfg.Alpha, nil)
		inRange := 0
		for _, c := range l.cands {
			if c.state == candAnswered && proto.CommonPrefixLen(c.contact.ID, target) >= bits {
				inRange++
			}
		}
		if inRange != need { // it stops at the need-th answer in range
			t.Fatalf("need %d: ended with %d answers in range after %d RPCs (full %d, %d cands)", need, inRange, l.Msgs(), full.Msgs(), len(l.cands))
		}
		if l.Msgs() > full.Msgs() || need < cfg.K && l.Msgs() >= full.Msgs() {
			t.Fatalf("need %d: %d RPCs, a full lookup %d", need, l.Msgs(), full.Msgs())
		}
		t.Logf("need %d: %d RPCs (a full lookup: %d), %d in range answered", need, l.Msgs(), full.Msgs(), inRange)
	}
}

// TestLookupRefreshInFlight: a bucket refresh (EndWhenFilled) keeps no
// more RPCs in flight than answers from the bucket's range it still
// lacks (at least one), asks nodes outside the range as any lookup does,
// and ends at the answers it needs.
func TestLookupRefreshInFlight(t *testing.T) {
	cfg := DefaultConfig()
	cfg.IDWorkBits, cfg.Paths = 0, 1
	target := proto.NodeID{0x05}
	id := func(b byte) proto.NodeID { return proto.NodeID{b, 0xee} }
	ct := func(b byte) proto.DHTContact { return contactAt(id(b), "127.0.0.1:"+strconv.Itoa(1000+int(b))) }
	ids := func(cs []proto.DHTContact) []proto.NodeID {
		var out []proto.NodeID
		for _, c := range cs {
			out = append(out, c.ID)
		}
		return out
	}
	// Range: the IDs sharing target's first 4 bits (0x0_); three nodes
	// outside it known, two answers of the range needed.
	l := NewLookup(proto.NodeID{0xff}, target, FindNode, []proto.DHTContact{ct(0x80), ct(0x90), ct(0xa0)}, cfg)
	l.EndWhenFilled(4, 2)
	if got := ids(l.Next(testNow)); !slices.Equal(got, []proto.NodeID{id(0x80), id(0x90)}) {
		t.Fatalf("first round asked %v, want the 2 closest (2 answers lacking, not Alpha = 3)", got)
	}
	// 0x80 names three nodes of the range: one more RPC (0x90 is in flight).
	if got := ids(l.Answer(id(0x80), []proto.DHTContact{ct(0x01), ct(0x02), ct(0x03)}, nil, testNow)); !slices.Equal(got, []proto.NodeID{id(0x01)}) {
		t.Fatalf("after the range was found, asked %v; want only its closest, 0x01", got)
	}
	// 0x01 answers: one answer lacking, one RPC (0x90) in flight: nothing more.
	if got := l.Answer(id(0x01), nil, nil, testNow); len(got) != 0 || l.Done() {
		t.Fatalf("one answer lacking and one RPC in flight: asked %v, done %v", ids(got), l.Done())
	}
	// 0x90 (outside) answers: the next of the range, 0x03 (distance 6), goes out.
	if got := ids(l.Answer(id(0x90), nil, nil, testNow)); !slices.Equal(got, []proto.NodeID{id(0x03)}) {
		t.Fatalf("asked %v, want 0x03", got)
	}
	if got := l.Answer(id(0x03), nil, nil, testNow); len(got) != 0 || !l.Done() {
		t.Fatalf("both answers in: asked %v, done %v", ids(got), l.Done())
	}
	if l.Msgs() != 4 {
		t.Fatalf("refresh sent %d RPCs, want 4", l.Msgs())
	}
	// An ordinary lookup keeps Alpha in flight.
	l = NewLookup(proto.NodeID{0xff}, target, FindNode, []proto.DHTContact{ct(0x80), ct(0x90), ct(0xa0)}, cfg)
	if got := l.Next(testNow); len(got) != cfg.Alpha {
		t.Fatalf("a lookup asked %d at first, want Alpha = %d", len(got), cfg.Alpha)
	}
}
