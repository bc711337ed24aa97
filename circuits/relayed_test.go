package circuits

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"veil/circuits/link"
	"veil/circuits/onion"
	"veil/proto"
)

// fakeLink is a link.Conn the core only compares and asks for its peer;
// a core that tried to send on it would fail the test.
type fakeLink struct {
	t    *testing.T
	name string
	peer proto.NodeID
}

func (l *fakeLink) Peer() proto.NodeID { return l.peer }
func (l *fakeLink) Inbound() bool      { return l.name == "prev" }
func (l *fakeLink) SendCell(c *proto.Cell) error {
	l.t.Errorf("the core sent on %s itself", l.name)
	return nil
}
func (l *fakeLink) TrySendCell(c *proto.Cell) error { return l.SendCell(c) }

// coreRig drives a relayCore as the origin would: it holds the origin's
// side of the one hop and seals cells for it.
type coreRig struct {
	t          *testing.T
	core       *relayCore
	prev, next *fakeLink
	hop        *onion.Hop // the origin's copy of the core's hop
	nextNode   *Identity
	now        time.Time
}

const rigPrevID, rigNextID = 0x80000011, 0x22

func newCoreRig(t *testing.T, relays bool) *coreRig {
	t.Helper()
	self, err := NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	nextNode, err := NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	r := &coreRig{
		t:        t,
		prev:     &fakeLink{t: t, name: "prev", peer: proto.NodeID{1}},
		next:     &fakeLink{t: t, name: "next", peer: nextNode.ID},
		nextNode: nextNode,
		now:      time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	r.core = newRelayCore(relayCoreConfig{self: self.ID, relays: relays, maxEarly: 8, extendTimeout: 10 * time.Second}, r.prev, rigPrevID)
	hs, c := create2To(t, rigPrevID, self)
	cur, old := self.OnionKeys()
	r.core.answerCreate(c, onion.ServerKeys{Current: cur, Previous: old}, nil)
	acts := r.core.ready()
	if len(acts) != 1 || acts[0].kind != actSend || acts[0].l != r.prev || acts[0].c.Command() != proto.CmdCreated2 {
		t.Fatalf("answer to CREATE2: %v", r.describe(acts))
	}
	r.hop = finishHop(t, hs, acts[0].c)
	proto.PutCell(acts[0].c)
	return r
}

// relay seals a relay cell for the core's hop, as the origin sends it.
func (r *coreRig) relay(early bool, cmd proto.RelayCommand, stream uint16, data []byte) relayEvent {
	return relayEvent{kind: evCell, l: r.prev, c: sealedRelay(r.t, r.hop, rigPrevID, early, cmd, stream, data)}
}

// raw is a cell of command cmd on link l (payload: reason byte, rest zero).
func (r *coreRig) raw(l *fakeLink, id uint32, cmd proto.Command, reason proto.DestroyReason) relayEvent {
	c := newCell(id, cmd)
	c.Payload()[0] = byte(reason)
	return relayEvent{kind: evCell, l: l, c: c}
}

func (r *coreRig) extend2() []byte {
	return extend2To(r.t, r.nextNode.ID, r.nextNode.OnionPublic(), netip.MustParseAddrPort("127.0.0.1:9"))
}

// created2 is a well-formed CREATED2 from the next hop (its contents are
// the origin's business, not the relay's).
func (r *coreRig) created2() relayEvent {
	c := newCell(rigNextID, proto.CmdCreated2)
	proto.Created2{HData: make([]byte, 64)}.Append(c.Payload()[:0])
	return relayEvent{kind: evCell, l: r.next, c: c}
}

func (r *coreRig) linkName(l link.Conn) string {
	switch l {
	case r.prev:
		return "prev"
	case r.next:
		return "next"
	case nil:
		return "-"
	}
	return "?"
}

// describe renders actions one per line, with what a reviewer checks.
func (r *coreRig) describe(acts []relayAction) string {
	var out []string
	for _, a := range acts {
		var s string
		switch a.kind {
		case actSend:
			s = fmt.Sprintf("send %s %v id=%#x", r.linkName(a.l), a.c.Command(), a.c.CircID())
		case actSendBack:
			s = fmt.Sprintf("sendback %v id=%#x", a.c.Command(), a.c.CircID())
		case actControl:
			s = fmt.Sprintf("control %v", a.cmd)
			if a.cmd == proto.RelayTruncated {
				s += fmt.Sprintf(" %v", proto.DestroyReason(a.data[0]))
			}
		case actDeliver:
			s = fmt.Sprintf("deliver %v stream=%d", a.relay.Command, a.relay.StreamID)
		case actBegin:
			s = fmt.Sprintf("begin stream=%d %s", a.stream, a.dest)
		case actDestroy:
			s = fmt.Sprintf("destroy %s id=%#x %v", r.linkName(a.l), a.id, a.reason)
		case actForget:
			s = fmt.Sprintf("forget %s id=%#x", r.linkName(a.l), a.id)
		case actDial:
			s = fmt.Sprintf("dial %s %v in=%v gen=%d", a.next.Short(), a.addr, a.deadline.Sub(r.now), a.gen)
		case actCancelDial:
			s = "canceldial"
		case actClose:
			s = fmt.Sprintf("close %v", a.reason)
		}
		out = append(out, s)
		if a.c != nil {
			proto.PutCell(a.c)
		}
	}
	return strings.Join(out, "\n")
}

// The relayed circuit's protocol, driven event by event with no goroutine,
// link or clock: each step lists the actions the core must ask for.
func TestRelayCoreScenarios(t *testing.T) {
	type step struct {
		ev   func(r *coreRig) relayEvent
		want string // actions, one per line
	}
	dialed := func(r *coreRig) relayEvent {
		return relayEvent{kind: evDialed, gen: 1, l: r.next, id: rigNextID}
	}
	extend := func(r *coreRig) relayEvent { return r.relay(true, proto.RelayExtend2, 0, r.extend2()) }
	wantDial := func(r *coreRig) string {
		return fmt.Sprintf("dial %s 127.0.0.1:9 in=10s gen=1", r.nextNode.ID.Short())
	}
	cases := []struct {
		name   string
		relays bool
		steps  []step
	}{
		{"extend, relay both ways, lose next", true, []step{
			{extend, "DIAL"},
			{dialed, "send next CREATE2 id=0x22"},
			{func(r *coreRig) relayEvent { return r.created2() }, "control EXTENDED2"},
			{func(r *coreRig) relayEvent {
				// Sealed for a hop beyond us: not recognised, goes on.
				return relayEvent{kind: evCell, l: r.prev, c: newCell(rigPrevID, proto.CmdRelay)}
			}, "send next RELAY id=0x22"},
			{func(r *coreRig) relayEvent { return r.raw(r.next, rigNextID, proto.CmdRelay, 0) }, "sendback RELAY id=0x80000011"},
			{func(r *coreRig) relayEvent { return relayEvent{kind: evLinkClosed, l: r.next} }, "forget next id=0x22\ncontrol TRUNCATED CHANNEL_CLOSED"},
			{func(r *coreRig) relayEvent { return r.raw(r.next, rigNextID, proto.CmdRelay, 0) }, ""},
		}},
		{"cells and DESTROY handled while the dial runs", true, []step{
			{extend, "DIAL"},
			{func(r *coreRig) relayEvent { return r.relay(false, proto.RelayDrop, 0, nil) }, "deliver DROP stream=0"},
			{func(r *coreRig) relayEvent { return r.relay(false, proto.RelayBegin, 5, beginData("echo")) }, "begin stream=5 echo"},
			{func(r *coreRig) relayEvent { return r.raw(r.prev, rigPrevID, proto.CmdDestroy, proto.DestroyFinished) }, "canceldial\nclose FINISHED"},
			{dialed, ""},
		}},
		{"TRUNCATE cancels the dial; its late answer is ignored", true, []step{
			{extend, "DIAL"},
			{func(r *coreRig) relayEvent { return r.relay(false, proto.RelayTruncate, 0, nil) }, "canceldial\ncontrol TRUNCATED REQUESTED"},
			{dialed, ""},
			{extend, "dial NEXT 127.0.0.1:9 in=10s gen=2"},
		}},
		{"a failed dial answers TRUNCATED", true, []step{
			{extend, "DIAL"},
			{func(r *coreRig) relayEvent {
				return relayEvent{kind: evDialed, gen: 1, reason: proto.DestroyConnectFailed}
			}, "control TRUNCATED CONNECTFAILED"},
		}},
		{"a second EXTEND2 during the dial is a violation", true, []step{
			{extend, "DIAL"},
			{extend, "canceldial\ndestroy prev id=0x80000011 PROTOCOL\nclose PROTOCOL"},
		}},
		{"EXTEND2 in RELAY", true, []step{
			{func(r *coreRig) relayEvent { return r.relay(false, proto.RelayExtend2, 0, r.extend2()) }, "destroy prev id=0x80000011 PROTOCOL\nclose PROTOCOL"},
		}},
		{"a node that does not relay", false, []step{
			{extend, "control TRUNCATED RESOURCELIMIT"},
		}},
		{"an unrecognised cell with no next hop", true, []step{
			{func(r *coreRig) relayEvent { return r.raw(r.prev, rigPrevID, proto.CmdRelay, 0) }, "destroy prev id=0x80000011 PROTOCOL\nclose PROTOCOL"},
		}},
		{"killed with a next hop", true, []step{
			{extend, "DIAL"},
			{dialed, "send next CREATE2 id=0x22"},
			{func(r *coreRig) relayEvent { return relayEvent{kind: evKill, reason: proto.DestroyTimeout} }, "forget next id=0x22\ndestroy next id=0x22 TIMEOUT\ndestroy prev id=0x80000011 TIMEOUT\nclose TIMEOUT"},
			{func(r *coreRig) relayEvent { return r.relay(false, proto.RelayDrop, 0, nil) }, ""},
		}},
		{"CREATE2 cannot be sent to the next hop", true, []step{
			{extend, "DIAL"},
			{dialed, "send next CREATE2 id=0x22"},
			{func(r *coreRig) relayEvent { return relayEvent{kind: evSendFailed, l: r.next} }, "forget next id=0x22\ncontrol TRUNCATED CONNECTFAILED"},
		}},
		{"DESTROY from next", true, []step{
			{extend, "DIAL"},
			{dialed, "send next CREATE2 id=0x22"},
			{func(r *coreRig) relayEvent {
				return r.raw(r.next, rigNextID, proto.CmdDestroy, proto.DestroyHibernating)
			}, "forget next id=0x22\ncontrol TRUNCATED HIBERNATING"},
		}},
		{"prev's link closes", true, []step{
			{func(r *coreRig) relayEvent { return relayEvent{kind: evLinkClosed, l: r.prev} }, "close CHANNEL_CLOSED"},
		}},
		{"BEGIN on a stream ID of the last hop's half", true, []step{
			{func(r *coreRig) relayEvent {
				return r.relay(false, proto.RelayBegin, lastHopStreams, beginData("echo"))
			}, "destroy prev id=0x80000011 PROTOCOL\nclose PROTOCOL"},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newCoreRig(t, tc.relays)
			for i, s := range tc.steps {
				r.core.handle(s.ev(r), r.now)
				got := r.describe(r.core.ready())
				want := strings.ReplaceAll(s.want, "DIAL", wantDial(r))
				want = strings.ReplaceAll(want, "NEXT", r.nextNode.ID.Short())
				if got != want {
					t.Fatalf("step %d: actions\n%s\nwant\n%s", i, got, want)
				}
			}
		})
	}
}

// More RELAY_EARLY cells than MaxRelayEarly end the circuit.
func TestRelayCoreRelayEarlyCap(t *testing.T) {
	r := newCoreRig(t, true)
	for i := range 9 {
		r.core.handle(r.relay(true, proto.RelayDrop, 0, nil), r.now)
		got := r.describe(r.core.ready())
		if i < 8 && got != "deliver DROP stream=0" {
			t.Fatalf("RELAY_EARLY %d: %s", i+1, got)
		}
		if i == 8 && got != "destroy prev id=0x80000011 PROTOCOL\nclose PROTOCOL" {
			t.Fatalf("RELAY_EARLY 9: %s", got)
		}
	}
}

// Relaying a cell asks for one action and allocates nothing.
func TestRelayCoreForwardAllocatesNothing(t *testing.T) {
	r := newCoreRig(t, true)
	r.core.handle(r.relay(true, proto.RelayExtend2, 0, r.extend2()), r.now)
	r.describe(r.core.ready())
	r.core.handle(relayEvent{kind: evDialed, gen: 1, l: r.next, id: rigNextID}, r.now)
	r.describe(r.core.ready())
	r.core.handle(r.created2(), r.now)
	r.describe(r.core.ready())
	c := proto.GetCell()
	allocs := testing.AllocsPerRun(1000, func() {
		c.SetCircID(rigPrevID)
		c.SetCommand(proto.CmdRelay)
		r.core.handle(relayEvent{kind: evCell, l: r.prev, c: c}, r.now)
		acts := r.core.ready()
		if len(acts) != 1 || acts[0].kind != actSend || acts[0].c != c {
			t.Fatalf("forwarding: %d actions", len(acts))
		}
		c.SetCircID(rigNextID)
		r.core.handle(relayEvent{kind: evCell, l: r.next, c: c}, r.now)
		if acts := r.core.ready(); len(acts) != 1 || acts[0].kind != actSendBack {
			t.Fatalf("backward: %d actions", len(acts))
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per relayed cell pair", allocs)
	}
}
