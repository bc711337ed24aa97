package ordb

import (
	"os"
	"slices"
	"testing"
	"time"

	"veil/proto"
)

// fuzzConfig keeps every bound small so that fuzzing reaches them.
func fuzzConfig(c *Config) {
	c.MaxNames, c.MaxRefsPerName, c.MaxNamesPerCircuit = 6, 3, 4
	c.MaxRelayed, c.MaxPending, c.MaxPendingPerCircuit = 16, 8, 4
	c.MaxAttempts, c.MaxConnects, c.MaxKnownPerNeighbour = 3, 2, 4
	c.WindowChunks = 4
}

// FuzzCore drives three ORDB cores, two requesters and three holders with
// a random sequence of events: queries (some with counters out of range,
// some reusing IDs), DB_INFO with good and bad P, stream advertisements,
// announcements, cancels, cut circuits, holders that serve, refuse,
// destroy, stay silent or forge, stray answers, and time passing.
// Invariants: no panic; lists, names, relayed IDs and pending requests
// stay within their bounds; every query a requester did not cancel is
// answered or ended, and nothing follows its DB_END; once time has run
// out every core is idle.
func FuzzCore(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 1, 0, 7, 7, 7})
	f.Add([]byte{1, 0, 1, 3, 1, 1, 1, 3, 0, 0, 1, 3, 2, 0, 7, 9, 6, 20, 7, 9})
	f.Add([]byte{3, 0, 1, 0, 3, 1, 2, 0, 0, 1, 0, 1, 0, 5, 5, 0, 7, 50, 6, 200, 7, 50})
	f.Add([]byte{8, 0, 3, 1, 0, 0, 2, 0, 0, 3, 1, 0, 4, 0, 9, 1, 2, 3, 5, 2, 7, 99, 6, 255})
	f.Add([]byte{2, 1, 2, 9, 0, 3, 0, 1, 3, 0, 0, 0, 1, 0, 7, 40, 10, 0, 3, 7, 40})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 600 {
			return
		}
		s := runCoreEvents(t, data, false)
		s.settle()
		checkBounds(t, s)
		s.checkIdle()
		s.checkAnswered()
		for id, n := range s.forwards {
			if n > 64 {
				t.Fatalf("request %d forwarded %d times", id, n)
			}
		}
	})
}

// runCoreEvents builds the fuzz network and plays the events data
// encodes, checking bounds after each; with record, every action is kept
// in s.log.
func runCoreEvents(t *testing.T, data []byte, record bool) *coreSim {
	s := newCoreSim(t, fuzzConfig)
	s.record = record
	s.limit = 200_000
	s.trace = os.Getenv("ORDB_TRACE") != ""
	seeds := seedMap{hn(1): {0, 50}}
	cores := []int{s.addORDB(nil), s.addORDB(nil), s.addORDB(seeds)}
	var nbr [][2]simEnd
	for i := range cores {
		for j := i + 1; j < len(cores); j++ {
			a, b := s.neighbours(cores[i], cores[j])
			nbr = append(nbr, [2]simEnd{a, b})
		}
	}
	var reqs, holders []simEnd
	for i := range 2 {
		e, _ := s.link(s.addRequester(), cores[i])
		reqs = append(reqs, e)
	}
	for i := range 3 {
		e, _ := s.link(s.addHolder(holderMode(i)), cores[i%len(cores)])
		holders = append(holders, e)
	}
	names := []proto.HashName{s.name, hn(1), hn(2), hn(3)}
	var nextID uint64 = 1

	pos := 0
	byte1 := func() int {
		if pos >= len(data) {
			return 0
		}
		pos++
		return int(data[pos-1])
	}
	pick := func(n int) int { return byte1() % n }
	for pos < len(data) {
		switch pick(11) {
		case 0, 10: // a requester's query
			r := reqs[pick(len(reqs))]
			q := proto.DBQuery{HashName: names[pick(len(names))], Counter: uint8(pick(7))}
			if k := pick(4); k > 0 {
				q.Chunk, q.NbChunks = uint32(pick(64)), uint16(1+pick(80))
			}
			q.RequestID = nextID
			nextID++
			s.ask(r, q)
		case 1: // a query reusing an ID already used: not tracked
			r := reqs[pick(len(reqs))]
			id := uint64(1 + pick(int(nextID))) // may be the next new ID
			nextID = max(nextID, id+1)
			s.send(r, simMsg{kind: mQuery, q: proto.DBQuery{HashName: names[pick(len(names))], Chunk: 1, NbChunks: 1, RequestID: id}})
			for _, rr := range reqs {
				delete(s.nodes[rr.node].asked, id)
			}
		case 2: // DB_INFO, P possibly out of range
			hd := holders[pick(len(holders))]
			if o, ok := s.links[hd]; ok {
				s.nodes[o.node].core.HandleInfo(o.circ, proto.DBInfo{HashName: names[pick(len(names))], P: uint8(pick(6))}, s.now)
				s.drain(o.node)
			}
		case 3: // a live stream advertisement, maybe inverted
			hd := holders[pick(len(holders))]
			if o, ok := s.links[hd]; ok {
				first := uint64(pick(40))
				last := first + uint64(pick(40)) - 5
				s.nodes[o.node].core.HandleStreamInfo(o.circ, StreamInfo{HashName: names[pick(len(names))], First: first, Last: last}, s.now)
				s.drain(o.node)
			}
		case 4: // a neighbour's announcement
			pr := nbr[pick(len(nbr))]
			e := pr[pick(2)]
			if _, ok := s.links[e]; ok {
				s.nodes[e.node].core.HandleAnnounce(e.circ, Announce{HashName: names[pick(len(names))], Live: pick(2) == 0}, s.now)
				s.drain(e.node)
			}
		case 5: // a requester gives up on a query
			r := reqs[pick(len(reqs))]
			id := uint64(1 + pick(int(nextID)))
			nextID = max(nextID, id+1)
			delete(s.nodes[r.node].asked, id)
			s.send(r, simMsg{kind: mEnd, id: id, reason: proto.DBEndFinished})
		case 6: // time passes
			s.now = s.now.Add(time.Duration(byte1()) * 500 * time.Millisecond)
			for i := range cores {
				s.nodes[cores[i]].core.Tick(s.now)
				s.drain(cores[i])
			}
		case 7: // some messages travel
			for range byte1() {
				if len(s.queue) == 0 {
					break
				}
				m := s.queue[0]
				s.queue = s.queue[1:]
				s.msgs++
				s.deliver(m)
			}
		case 8: // a holder changes behaviour
			hd := holders[pick(len(holders))]
			s.nodes[hd.node].mode = holderMode(pick(5))
		case 9: // a circuit is cut, or stray inputs arrive
			switch pick(3) {
			case 0:
				all := append(append(append([]simEnd{}, reqs...), holders...), nbr[pick(len(nbr))][0])
				s.close(all[pick(len(all))])
			default:
				i := cores[pick(len(cores))]
				c, circ, id := s.nodes[i].core, CircuitID(pick(20)), uint64(pick(int(nextID)+1))
				c.HandleAnswer(circ, id, proto.DBData{Chunk: uint32(pick(64)), Data: make([]byte, proto.ChunkSize)}, s.now)
				c.HandleEnd(circ, id, proto.DBEndReason(pick(3)), s.now)
				for _, r := range reqs {
					if s.links[r] == (simEnd{i, circ}) {
						// A DB_END on a requester's circuit is that
						// requester giving up.
						delete(s.nodes[r.node].asked, id)
					}
				}
				c.HandleLookup(names[pick(len(names))], []proto.ProviderRecord{{Key: names[pick(len(names))], ORDB: nodeID(byte(pick(5)))}}, pick(2) == 0, s.now)
				c.HandleConnect(nodeID(byte(pick(5))), circ, pick(2) == 0, s.now)
				c.HandleFacilitator(id, circ, pick(2) == 0, s.now)
				s.drain(i)
			}
		}
		checkBounds(t, s)
	}
	return s
}

// The same events give the same actions, in the same order: the cores
// hold no hidden randomness or clock.
func TestCoreDeterministic(t *testing.T) {
	inputs := [][]byte{
		{1, 0, 1, 3, 1, 1, 1, 3, 0, 0, 1, 3, 2, 0, 7, 9, 6, 20, 7, 9},
		[]byte("7000100000001010000010000000000000000000000000002080000000070000)00a00X20000008000907000000707102070000110110100700008010000008010(07000100a1001"),
	}
	for i := range 30 {
		b := make([]byte, 200)
		for j := range b {
			b[j] = byte((j*131 + i*71) ^ (j >> 2))
		}
		inputs = append(inputs, b)
	}
	total := 0
	for k, in := range inputs {
		a := runCoreEvents(t, in, true)
		a.settle()
		b := runCoreEvents(t, in, true)
		b.settle()
		if !slices.Equal(a.log, b.log) {
			t.Fatalf("input %d: two runs differ (%d and %d actions)", k, len(a.log), len(b.log))
		}
		total += len(a.log)
	}
	if total < 100 {
		t.Fatalf("only %d actions in all: the inputs exercise nothing", total)
	}
	t.Logf("%d actions compared", total)
}

func checkBounds(t *testing.T, s *coreSim) {
	t.Helper()
	for i, n := range s.nodes {
		c := n.core
		if c == nil {
			continue
		}
		cfg := c.cfg
		if c.Names() > cfg.MaxNames || c.Relayed() > cfg.MaxRelayed || c.Pending() > cfg.MaxPending {
			t.Fatalf("core %d: %d names, %d relayed, %d pending", i, c.Names(), c.Relayed(), c.Pending())
		}
		if c.names.lru.Len() != len(c.names.m) {
			t.Fatalf("core %d: LRU %d, names %d", i, c.names.lru.Len(), len(c.names.m))
		}
		for h, e := range c.names.m {
			if len(e.files) > cfg.MaxRefsPerName || len(e.streams) > cfg.MaxRefsPerName {
				t.Fatalf("core %d: %v lists %d/%d", i, h, len(e.files), len(e.streams))
			}
		}
		for circ, k := range c.names.perCir {
			if k > cfg.MaxNamesPerCircuit {
				t.Fatalf("core %d: circuit %d referenced for %d names", i, circ, k)
			}
		}
		for _, ci := range c.circs {
			if len(ci.known.set) > cfg.MaxKnownPerNeighbour {
				t.Fatalf("core %d: neighbour knowledge %d", i, len(ci.known.set))
			}
		}
	}
}
