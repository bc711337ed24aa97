package circuits

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"veil/circuits/onion"
	"veil/proto"
)

// originRig drives an originCore as its first hop would, with the hops'
// side of each handshake and their backward layers.
type originRig struct {
	t       *testing.T
	core    *originCore
	nodes   []*Identity
	servers []*onion.Hop // each hop's side of its keys, first hop first
	replies []chan error // the requests' answer channels, in order
	last    []originAction
	now     time.Time
}

const rigOutID = 0x80000042

func newOriginRig(t *testing.T, hops int) *originRig {
	t.Helper()
	r := &originRig{t: t, core: newOriginCore(rigOutID), now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	for range hops {
		id, err := NewEphemeralIdentity()
		if err != nil {
			t.Fatal(err)
		}
		r.nodes = append(r.nodes, id)
	}
	return r
}

// handle feeds ev and renders the actions, keeping them in last.
func (r *originRig) handle(ev originEvent) string {
	r.core.handle(ev, r.now)
	r.last = append(r.last[:0], r.core.ready()...)
	return r.describe(r.last)
}

// extend is the request to add hop i.
func (r *originRig) extend(i int) originEvent {
	hs, create, err := onion.NewClientHandshake(nil, r.nodes[i].ID, r.nodes[i].OnionPublic())
	if err != nil {
		r.t.Fatal(err)
	}
	ch := make(chan error, 1)
	r.replies = append(r.replies, ch)
	return originEvent{kind: oevExtend, hs: hs, create: create, next: r.nodes[i].ID, addr: netip.MustParseAddrPort("127.0.0.1:9"), reply: ch}
}

// answer runs hop i's server handshake on the CREATE2 (first hop) or
// EXTEND2 the last actions hold and returns the answer the origin gets.
func (r *originRig) answer(i int) originEvent {
	var req proto.Create2
	var err error
	switch a := r.last[0]; a.kind {
	case oactCreate:
		req, err = proto.ParseCreate2(a.c.Payload())
	case oactControl:
		var ext proto.Extend2
		ext, err = proto.ParseExtend2(a.data)
		req = ext.Create
	default:
		r.t.Fatalf("no handshake to answer in %v", a.kind)
	}
	if err != nil {
		r.t.Fatal(err)
	}
	cur, old := r.nodes[i].OnionKeys()
	resp, km, err := onion.ServerHandshake(nil, r.nodes[i].ID, onion.ServerKeys{Current: cur, Previous: old}, req)
	if err != nil {
		r.t.Fatal(err)
	}
	r.servers = append(r.servers, onion.NewHop(&km))
	if i == 0 {
		c := newCell(rigOutID, proto.CmdCreated2)
		resp.Append(c.Payload()[:0])
		return originEvent{kind: oevCell, c: c}
	}
	return r.back(i-1, proto.RelayExtended2, 0, resp.Append(nil))
}

// back is a relay cell hop k sends towards the origin, through the hops
// before it.
func (r *originRig) back(k int, cmd proto.RelayCommand, stream uint16, data []byte) originEvent {
	c := newCell(rigOutID, proto.CmdRelay)
	if err := proto.PutRelay(c.PayloadArray(), proto.RelayHeader{Command: cmd, StreamID: stream}, data); err != nil {
		r.t.Fatal(err)
	}
	r.servers[k].SealBackward(c.PayloadArray())
	for j := k - 1; j >= 0; j-- {
		r.servers[j].RelayBackward(c.PayloadArray())
	}
	return originEvent{kind: oevCell, c: c}
}

func (r *originRig) describe(acts []originAction) string {
	var out []string
	for _, a := range acts {
		var s string
		switch a.kind {
		case oactCreate:
			s = fmt.Sprintf("create id=%#x", a.c.CircID())
		case oactControl:
			s = fmt.Sprintf("control hop=%d %v", a.target, a.cmd)
			if a.early {
				s += " early"
			}
		case oactAddHop:
			s = "addhop"
		case oactCutHops:
			s = fmt.Sprintf("cut to %d", a.n)
		case oactDeliver:
			s = fmt.Sprintf("deliver %v stream=%d", a.relay.Command, a.relay.StreamID)
		case oactBegin:
			s = fmt.Sprintf("begin stream=%#x %s", a.stream, a.dest)
		case oactReply:
			s = "reply "
			switch {
			case a.err == nil:
				s += "ok"
			case errors.Is(a.err, errBusy):
				s += "busy"
			case errors.Is(a.err, ErrTruncated):
				s += "truncated"
			case errors.Is(a.err, ErrDestroyed):
				s += "destroyed"
			default:
				s += "error"
			}
		case oactClose:
			s = fmt.Sprintf("close %v", a.reason)
			if a.destroy {
				s += " destroy"
			}
		}
		out = append(out, s)
	}
	return strings.Join(out, "\n")
}

// build makes the rig's circuit n hops long, checking each step.
func (r *originRig) build(n int) {
	r.t.Helper()
	for i := range n {
		want := "create id=0x80000042"
		if i > 0 {
			want = fmt.Sprintf("control hop=%d EXTEND2 early", i-1)
		}
		if got := r.handle(r.extend(i)); got != want {
			r.t.Fatalf("extend to hop %d: %s", i+1, got)
		}
		if got := r.handle(r.answer(i)); got != "addhop\nreply ok" {
			r.t.Fatalf("answer of hop %d: %s", i+1, got)
		}
	}
}

// The origin circuit's protocol, driven event by event with no goroutine,
// link or clock.
func TestOriginCoreScenarios(t *testing.T) {
	type step struct {
		ev   func(r *originRig) originEvent
		want string
	}
	cases := []struct {
		name  string
		hops  int // built before the steps
		nodes int
		steps []step
	}{
		{"streams at the last hop only", 2, 2, []step{
			{func(r *originRig) originEvent { return r.back(1, proto.RelayData, 1, []byte("x")) }, "deliver DATA stream=1"},
			{func(r *originRig) originEvent { return r.back(1, proto.RelaySendme, 0, nil) }, "deliver SENDME stream=0"},
			{func(r *originRig) originEvent { return r.back(1, proto.RelayBegin, 0x8001, beginData("svc")) }, "begin stream=0x8001 svc"},
			{func(r *originRig) originEvent { return r.back(0, proto.RelayData, 1, []byte("x")) }, "close PROTOCOL destroy"},
		}},
		{"BEGIN on a stream ID of the origin's half", 1, 1, []step{
			{func(r *originRig) originEvent { return r.back(0, proto.RelayBegin, 1, beginData("svc")) }, "close PROTOCOL destroy"},
		}},
		{"a second request while one runs is refused", 2, 3, []step{
			{func(r *originRig) originEvent { return r.extend(2) }, "control hop=1 EXTEND2 early"},
			{func(r *originRig) originEvent { return r.extend(2) }, "reply busy"},
			{func(r *originRig) originEvent {
				return originEvent{kind: oevTruncate, keep: 1, reply: make(chan error, 1)}
			}, "reply busy"},
		}},
		{"a failed extension leaves the circuit up", 1, 2, []step{
			{func(r *originRig) originEvent { return r.extend(1) }, "control hop=0 EXTEND2 early"},
			{func(r *originRig) originEvent {
				return r.back(0, proto.RelayTruncated, 0, []byte{byte(proto.DestroyConnectFailed)})
			}, "reply truncated"},
			{func(r *originRig) originEvent { return r.back(0, proto.RelayDrop, 0, nil) }, "deliver DROP stream=0"},
		}},
		{"truncate, then extend again", 3, 3, []step{
			{func(r *originRig) originEvent {
				return originEvent{kind: oevTruncate, keep: 1, reply: make(chan error, 1)}
			}, "control hop=0 TRUNCATE"},
			{func(r *originRig) originEvent {
				return r.back(0, proto.RelayTruncated, 0, []byte{byte(proto.DestroyRequested)})
			}, "cut to 1\nreply ok"},
			{func(r *originRig) originEvent {
				r.servers = r.servers[:1]
				return r.extend(1)
			}, "control hop=0 EXTEND2 early"},
			{func(r *originRig) originEvent { return r.answer(1) }, "addhop\nreply ok"},
			{func(r *originRig) originEvent { return r.back(1, proto.RelayData, 1, []byte("x")) }, "deliver DATA stream=1"},
		}},
		{"an unasked TRUNCATED breaks the circuit", 2, 2, []step{
			{func(r *originRig) originEvent {
				return r.back(0, proto.RelayTruncated, 0, []byte{byte(proto.DestroyChannelClosed)})
			}, "close CHANNEL_CLOSED destroy"},
		}},
		{"a forged cell", 2, 2, []step{
			{func(r *originRig) originEvent {
				return originEvent{kind: oevCell, c: newCell(rigOutID, proto.CmdRelay)}
			}, "close PROTOCOL destroy"},
		}},
		{"DESTROY fails the pending request", 1, 2, []step{
			{func(r *originRig) originEvent { return r.extend(1) }, "control hop=0 EXTEND2 early"},
			{func(r *originRig) originEvent {
				c := newCell(rigOutID, proto.CmdDestroy)
				c.Payload()[0] = byte(proto.DestroyTimeout)
				return originEvent{kind: oevCell, c: c}
			}, "reply destroyed\nclose TIMEOUT"},
			{func(r *originRig) originEvent { return r.back(0, proto.RelayDrop, 0, nil) }, ""},
		}},
		{"an unasked CREATED2", 1, 2, []step{
			{func(r *originRig) originEvent {
				c := newCell(rigOutID, proto.CmdCreated2)
				proto.Created2{HData: make([]byte, 64)}.Append(c.Payload()[:0])
				return originEvent{kind: oevCell, c: c}
			}, "close PROTOCOL destroy"},
		}},
		{"RELAY_EARLY towards the origin", 1, 1, []step{
			{func(r *originRig) originEvent {
				ev := r.back(0, proto.RelayDrop, 0, nil)
				ev.c.SetCommand(proto.CmdRelayEarly)
				return ev
			}, "close PROTOCOL destroy"},
		}},
		{"the link goes", 1, 1, []step{
			{func(r *originRig) originEvent { return originEvent{kind: oevLinkClosed} }, "close CHANNEL_CLOSED"},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newOriginRig(t, tc.nodes)
			r.build(tc.hops)
			for i, s := range tc.steps {
				if got := r.handle(s.ev(r)); got != s.want {
					t.Fatalf("step %d: actions\n%s\nwant\n%s", i, got, s.want)
				}
			}
		})
	}
}

// Receiving a data cell at the origin of a 3-hop circuit asks for one
// action and allocates nothing.
func TestOriginCoreDeliverAllocatesNothing(t *testing.T) {
	r := newOriginRig(t, 3)
	r.build(3)
	evs := make([]originEvent, 200)
	for i := range evs {
		evs[i] = r.back(2, proto.RelayData, 1, []byte("data"))
	}
	i := 0
	allocs := testing.AllocsPerRun(len(evs)-1, func() {
		r.core.handle(evs[i], r.now)
		i++
		if acts := r.core.ready(); len(acts) != 1 || acts[0].kind != oactDeliver {
			t.Fatalf("%d actions", len(acts))
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per delivered cell", allocs)
	}
}
