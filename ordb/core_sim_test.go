package ordb

import (
	"crypto/ed25519"
	"fmt"
	"slices"
	"testing"
	"time"

	"veil/chunkstore/content"
	"veil/proto"
)

// coreSim wires several Cores, requesters and holders together in memory:
// circuits are pairs of ends, messages wait in one FIFO queue, the DHT is
// a map filled by Store actions, and every message is counted. No
// goroutines: a run is a loop over the queue.
type coreSim struct {
	t     testing.TB
	now   time.Time
	nodes []*simNode
	links map[simEnd]simEnd
	queue []simMsg
	msgs  int
	limit int // a run delivering more messages than this fails
	next  CircuitID

	dht  map[proto.HashName][]int // providers STOREd, by node index
	desc proto.DBConnected        // the descriptor of name
	name proto.HashName

	forwards map[uint64]int // Forward actions per request ID, all cores
	mod      func(*Config)  // applied to every core's config
	post     func(*Core)    // applied to every new core
	trace    bool           // log every message and action
	record   bool           // keep every action in log
	log      []string
}

type simKind uint8

const (
	simORDB simKind = iota
	simRequester
	simHolder
)

// holderMode is how a holder answers a query.
type holderMode uint8

const (
	holderServes   holderMode = iota // descriptor or up to 64 chunks
	holderRefuses                    // DB_END UNAVAILABLE
	holderDestroys                   // DB_END DESTROYED
	holderSilent                     // nothing
	holderForges                     // a descriptor of another content, or a wrong range
)

type simNode struct {
	kind  simKind
	core  *Core
	mode  holderMode
	got   map[uint64][]simMsg // requester: what came back, per request ID
	asked map[uint64]bool     // requester: queries it sent and did not cancel
}

type simEnd struct {
	node int
	circ CircuitID
}

type msgKind uint8

const (
	mQuery msgKind = iota
	mAnswer
	mEnd
	mAnnounce
	mLookup  // DHT result to a core
	mConnect // connect result to a core
	mFacilitator
)

type simMsg struct {
	to     simEnd
	kind   msgKind
	q      proto.DBQuery
	id     uint64
	msg    proto.DBMessage
	reason proto.DBEndReason
	ann    Announce
	name   proto.HashName
	recs   []proto.ProviderRecord
	prov   proto.NodeID
	ok     bool
}

func newCoreSim(t testing.TB, mod func(*Config)) *coreSim {
	priv := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	d, err := content.NewDescriptor(priv, 1000*proto.ChunkSize, "video/mp4", content.Hash{7}, 1_700_000_000)
	if err != nil {
		t.Fatal(err)
	}
	s := &coreSim{t: t, now: t0, links: make(map[simEnd]simEnd), limit: 100_000,
		dht: make(map[proto.HashName][]int), desc: d, name: content.HashNameOf(d),
		forwards: make(map[uint64]int)}
	s.mod = mod
	return s
}

// addORDB adds an ORDB serving seeds.
func (s *coreSim) addORDB(seeds Seeds) int {
	cfg := DefaultConfig()
	cfg.Self = nodeID(byte(len(s.nodes)))
	if s.mod != nil {
		s.mod(&cfg)
	}
	c, err := NewCore(cfg, seeds)
	if err != nil {
		s.t.Fatal(err)
	}
	if s.post != nil {
		s.post(c)
	}
	s.nodes = append(s.nodes, &simNode{kind: simORDB, core: c})
	return len(s.nodes) - 1
}

func (s *coreSim) addRequester() int {
	s.nodes = append(s.nodes, &simNode{kind: simRequester, got: make(map[uint64][]simMsg), asked: make(map[uint64]bool)})
	return len(s.nodes) - 1
}

func (s *coreSim) addHolder(mode holderMode) int {
	s.nodes = append(s.nodes, &simNode{kind: simHolder, mode: mode})
	return len(s.nodes) - 1
}

// link makes a circuit between nodes a and b and returns its two ends.
func (s *coreSim) link(a, b int) (simEnd, simEnd) {
	s.next++
	ea := simEnd{a, s.next}
	s.next++
	eb := simEnd{b, s.next}
	s.links[ea], s.links[eb] = eb, ea
	return ea, eb
}

// neighbours links two ORDBs as neighbours.
func (s *coreSim) neighbours(a, b int) (simEnd, simEnd) {
	ea, eb := s.link(a, b)
	s.nodes[a].core.AddNeighbour(ea.circ, s.now)
	s.nodes[b].core.AddNeighbour(eb.circ, s.now)
	return ea, eb
}

// close cuts the circuit of end e at both ends.
func (s *coreSim) close(e simEnd) {
	o, ok := s.links[e]
	if !ok {
		return
	}
	delete(s.links, e)
	delete(s.links, o)
	for _, x := range []simEnd{e, o} {
		n := s.nodes[x.node]
		if n.core != nil {
			n.core.CircuitClosed(x.circ, s.now)
			s.drain(x.node)
		}
		if n.kind == simRequester {
			clear(n.asked) // its queries no longer expect answers
		}
	}
}

// send queues m to the other end of from's circuit (dropped if cut).
func (s *coreSim) send(from simEnd, m simMsg) {
	to, ok := s.links[from]
	if !ok {
		return
	}
	m.to = to
	s.queue = append(s.queue, m)
}

// ask has requester end r send q.
func (s *coreSim) ask(r simEnd, q proto.DBQuery) {
	if _, ok := s.links[r]; !ok {
		return // cut: nothing leaves
	}
	s.nodes[r.node].asked[q.RequestID] = true
	s.send(r, simMsg{kind: mQuery, q: q})
}

// info has holder end hd advertise name to its ORDB.
func (s *coreSim) info(hd simEnd, name proto.HashName, p uint8) {
	o := s.links[hd]
	s.nodes[o.node].core.HandleInfo(o.circ, proto.DBInfo{HashName: name, P: p}, s.now)
	s.drain(o.node)
}

// run delivers queued messages until none is left.
func (s *coreSim) run() {
	for len(s.queue) > 0 {
		m := s.queue[0]
		s.queue = s.queue[1:]
		s.msgs++
		if s.msgs > s.limit {
			s.t.Fatalf("more than %d messages: no bound", s.limit)
		}
		s.deliver(m)
	}
}

func (s *coreSim) deliver(m simMsg) {
	if m.kind < mLookup {
		if _, ok := s.links[m.to]; !ok {
			return // the circuit was cut while the message travelled
		}
	}
	if s.trace {
		s.t.Logf("%v deliver to %v: kind %d q %+v id %d %T reason %v", s.now.Sub(t0), m.to, m.kind, m.q, m.id, m.msg, m.reason)
	}
	n := s.nodes[m.to.node]
	switch n.kind {
	case simRequester:
		if m.kind == mAnswer || m.kind == mEnd {
			n.got[m.id] = append(n.got[m.id], m)
		}
		return
	case simHolder:
		if m.kind == mQuery {
			s.holderAnswers(m.to, n.mode, m.q)
		}
		return
	}
	c, at := n.core, m.to.circ
	switch m.kind {
	case mQuery:
		c.HandleQuery(at, m.q, s.now)
	case mAnswer:
		c.HandleAnswer(at, m.id, m.msg, s.now)
	case mEnd:
		c.HandleEnd(at, m.id, m.reason, s.now)
	case mAnnounce:
		c.HandleAnnounce(at, m.ann, s.now)
	case mLookup:
		c.HandleLookup(m.name, m.recs, true, s.now)
	case mConnect:
		c.HandleConnect(m.prov, at, m.ok, s.now)
	case mFacilitator:
		c.HandleFacilitator(m.id, 0, false, s.now)
	}
	s.drain(m.to.node)
}

// serve is what a holder or a ServeLocal sends back for q.
func (s *coreSim) serve(from simEnd, q proto.DBQuery, forge bool) {
	if q.WantsDescriptor() {
		d := s.desc
		if forge || q.HashName != s.name {
			d.Size++ // hashes to something else
		}
		s.send(from, simMsg{kind: mAnswer, id: q.RequestID, msg: d})
		return
	}
	n := uint32(min(q.NbChunks, DefaultMaxChunks))
	chunk := q.Chunk
	if forge {
		chunk++
	}
	s.send(from, simMsg{kind: mAnswer, id: q.RequestID, msg: proto.DBProof{Chunk: chunk, NbChunks: n}})
	s.send(from, simMsg{kind: mAnswer, id: q.RequestID, msg: proto.DBData{Chunk: chunk, Data: make([]byte, int(n)*proto.ChunkSize)}})
}

func (s *coreSim) holderAnswers(at simEnd, mode holderMode, q proto.DBQuery) {
	switch mode {
	case holderServes, holderForges:
		s.serve(at, q, mode == holderForges)
	case holderRefuses:
		s.send(at, simMsg{kind: mEnd, id: q.RequestID, reason: proto.DBEndUnavailable})
	case holderDestroys:
		s.send(at, simMsg{kind: mEnd, id: q.RequestID, reason: proto.DBEndDestroyed})
	}
}

// drain carries out the actions of node i's core.
func (s *coreSim) drain(i int) {
	c := s.nodes[i].core
	for _, a := range c.Ready() {
		if s.trace {
			s.t.Logf("    core %d: %#v", i, a)
		}
		if s.record {
			s.log = append(s.log, fmt.Sprintf("%v %d %#v", s.now.Sub(t0), i, a))
		}
		switch a := a.(type) {
		case ServeLocal:
			s.serve(simEnd{i, a.Circuit}, a.Query, false)
		case Forward:
			s.forwards[a.Query.RequestID]++
			s.send(simEnd{i, a.Circuit}, simMsg{kind: mQuery, q: a.Query})
		case Deliver:
			s.send(simEnd{i, a.Circuit}, simMsg{kind: mAnswer, id: a.RequestID, msg: a.Msg})
		case SendEnd:
			s.send(simEnd{i, a.Circuit}, simMsg{kind: mEnd, id: a.RequestID, reason: a.Reason})
		case Propagate:
			s.send(simEnd{i, a.To}, simMsg{kind: mAnnounce, ann: Announce{HashName: a.HashName, Size: a.Size, Type: a.Type, Live: a.Live}})
		case Store:
			if !slices.Contains(s.dht[a.HashName], i) {
				s.dht[a.HashName] = append(s.dht[a.HashName], i)
			}
		case Lookup:
			var recs []proto.ProviderRecord
			for _, p := range s.dht[a.HashName] {
				recs = append(recs, proto.ProviderRecord{Key: a.HashName, ORDB: nodeID(byte(p))})
			}
			s.queue = append(s.queue, simMsg{to: simEnd{node: i}, kind: mLookup, name: a.HashName, recs: recs})
		case Connect:
			j := int(a.Provider.ORDB[0])
			ok := j < len(s.nodes) && s.nodes[j].kind == simORDB && j != i
			m := simMsg{kind: mConnect, prov: a.Provider.ORDB, ok: ok, to: simEnd{node: i}}
			if ok {
				ei, ej := s.link(i, j)
				s.nodes[j].core.AddNeighbour(ej.circ, s.now)
				m.to = ei
			}
			s.queue = append(s.queue, m)
		case AskFacilitator:
			s.queue = append(s.queue, simMsg{to: simEnd{node: i}, kind: mFacilitator, id: a.Query.RequestID})
		default:
			s.t.Fatalf("unknown action %T", a)
		}
	}
}

// settle ticks every core at each next deadline until nothing is left to
// time out, delivering what each tick sends.
func (s *coreSim) settle() {
	for range 100_000 {
		s.run()
		var next time.Time
		for _, n := range s.nodes {
			if n.core == nil {
				continue
			}
			if d := n.core.NextDeadline(); !d.IsZero() && (next.IsZero() || d.Before(next)) {
				next = d
			}
		}
		if next.IsZero() {
			return
		}
		if next.After(s.now) {
			s.now = next
		}
		for i, n := range s.nodes {
			if n.core != nil {
				n.core.Tick(s.now)
				s.drain(i)
			}
		}
	}
	s.t.Fatal("deadlines never run out")
}

// checkAnswered fails unless every query a requester sent (and did not
// cancel) got at least one answer or one DB_END, and nothing after a
// DB_END.
func (s *coreSim) checkAnswered() {
	s.t.Helper()
	for i, n := range s.nodes {
		if n.kind != simRequester {
			continue
		}
		for id := range n.asked {
			got := n.got[id]
			if len(got) == 0 {
				s.t.Fatalf("requester %d: query %d never answered", i, id)
			}
			for k, m := range got {
				if m.kind == mEnd && k != len(got)-1 {
					s.t.Fatalf("requester %d: query %d: messages after DB_END: %v", i, id, kinds(got))
				}
			}
		}
	}
}

func kinds(ms []simMsg) string {
	var out string
	for _, m := range ms {
		out += fmt.Sprintf("%d/%T ", m.kind, m.msg)
	}
	return out
}

func (s *coreSim) checkIdle() {
	s.t.Helper()
	for i, n := range s.nodes {
		if n.core == nil {
			continue
		}
		c := n.core
		if c.Pending() != 0 || len(c.lookups) != 0 || len(c.connects) != 0 {
			s.t.Fatalf("core %d: %d pending, %d lookups, %d connects", i, c.Pending(), len(c.lookups), len(c.connects))
		}
	}
}

// A requester's query crosses ORDB A, which finds ORDB B in the DHT and
// forwards with counter + 1; B forwards to the holder, which answers; the
// answer comes back along the chain.
func TestCoreSimChain(t *testing.T) {
	s := newCoreSim(t, nil)
	a, b := s.addORDB(nil), s.addORDB(nil)
	r, hd := s.addRequester(), s.addHolder(holderServes)
	re, _ := s.link(r, a)
	he, _ := s.link(hd, b)
	s.info(he, s.name, 3) // B STOREs the name
	s.ask(re, query(s.name, 0, 0, 1, 77))
	s.ask(re, query(s.name, 30, 10, 1, 78))
	s.run()
	got := s.nodes[r].got
	if len(got[77]) != 1 || got[77][0].msg.(proto.DBConnected).Size != s.desc.Size {
		t.Fatalf("descriptor answer: %v", kinds(got[77]))
	}
	if len(got[78]) != 2 {
		t.Fatalf("chunk answer: %v", kinds(got[78]))
	}
	if s.forwards[77] != 2 || s.forwards[78] != 2 {
		t.Fatalf("forwards %v, want 2 each (A to B, B to holder)", s.forwards)
	}
	s.checkIdle()
	// A now lists B: the next query goes there with no lookup.
	files, _ := s.nodes[a].core.Refs(s.name)
	if len(files) != 1 || !files[0].Relay {
		t.Fatalf("A's list: %+v", files)
	}
}

// ORDBs whose lists point at each other and at no holder: a query ends in
// one DB_END UNAVAILABLE to the requester after a bounded number of
// messages, whether the relayed IDs are remembered or forgotten at once
// (then the counter alone stops the loop).
func TestCoreSimCycleEnds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mod   func(*Config)
		post  func(*Core)
		bound int
	}{
		{"relayed IDs remembered", func(c *Config) { c.Facilitators = false }, nil, 100},
		// An ID is forgotten as soon as its request ends: only requests
		// still pending and the counter stop the loop.
		{"relayed IDs forgotten", func(c *Config) { c.Facilitators = false }, func(c *Core) { c.relayed.ttl = 0 }, 600},
		{"with facilitators", nil, nil, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newCoreSim(t, tc.mod)
			s.post = tc.post
			const n = 4
			for range n {
				s.addORDB(nil)
			}
			for i := range n {
				for j := i + 1; j < n; j++ {
					ei, ej := s.neighbours(i, j)
					// Each tells the other it can reach the name.
					s.nodes[j].core.HandleAnnounce(ej.circ, Announce{HashName: s.name}, s.now)
					s.nodes[i].core.HandleAnnounce(ei.circ, Announce{HashName: s.name}, s.now)
					s.drain(i)
					s.drain(j)
				}
			}
			r := s.addRequester()
			re, _ := s.link(r, 0)
			s.msgs = 0
			s.ask(re, query(s.name, 5, 10, 0, 1234))
			s.run()
			got := s.nodes[r].got[1234]
			if len(got) != 1 || got[0].kind != mEnd || got[0].reason != proto.DBEndUnavailable {
				t.Fatalf("requester got %v", kinds(got))
			}
			if s.msgs > tc.bound {
				t.Fatalf("%d messages, want at most %d", s.msgs, tc.bound)
			}
			t.Logf("%d messages, %d forwards", s.msgs, s.forwards[1234])
			s.checkIdle()
		})
	}
}
