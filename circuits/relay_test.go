package circuits

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"veil/circuits/link"
	"veil/proto"
)

// waitUntil polls cond (bounded by circWait) and fails with what if it never holds.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(circWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitClosed(t testing.TB, c *Circuit) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(circWait):
		t.Fatal("circuit not closed")
	}
}

// flipper wraps a node's cell handler so that, once armed, it flips one
// bit in the next RELAY cell arriving from peer: a relay tampering with the
// cells it forwards.
func flipper(n *cnode, from proto.NodeID, armed *atomic.Bool) {
	n.links.SetHandlers(link.Handlers{
		Cell: func(l link.Conn, c *proto.Cell) {
			if c.Command() == proto.CmdRelay && l.Peer() == from && armed.CompareAndSwap(true, false) {
				c.Payload()[200] ^= 0x04
			}
			n.sw.HandleCell(l, c)
		},
		Closed: n.sw.HandleClosed,
	})
}

func TestBitFlipDestroysCircuit(t *testing.T) {
	for _, dir := range []string{"forward", "backward"} {
		t.Run(dir, func(t *testing.T) {
			noLeaks(t)
			nodes := newNet(t, 4, nil)
			var armed atomic.Bool
			if dir == "forward" {
				flipper(nodes[2], nodes[1].id.ID, &armed) // middle tampers with cells to the last hop
			} else {
				flipper(nodes[2], nodes[3].id.ID, &armed) // middle tampers with cells to the origin
			}
			c := build(t, nodes[0], nodes[1], nodes[2], nodes[3])
			if err := echoCheck(c, 5000, 1); err != nil {
				t.Fatal(err)
			}
			armed.Store(true)
			err := echoCheck(c, 5000, 2)
			if err == nil {
				t.Fatal("echo through a tampering relay succeeded")
			}
			waitClosed(t, c)
			if c.Reason() != proto.DestroyProtocol {
				t.Errorf("origin closed with %v", c.Reason()) // reasons travel back via TRUNCATED
			}
			for i, n := range nodes[1:] {
				waitUntil(t, fmt.Sprintf("node %d to drop the circuit", i+1), func() bool { return n.sw.Joined() == 0 })
			}
			detector := nodes[3]
			if dir == "backward" {
				detector = nodes[0]
			}
			// EventClosed comes after Done closes (the circuit's goroutine
			// emits it last): wait for it rather than look once.
			waitUntil(t, "the endpoint to close the circuit for PROTOCOL", func() bool { return hasClosed(detector, proto.DestroyProtocol) })
		})
	}
}

func TestClosingMiddleRelayDestroysBothEnds(t *testing.T) {
	noLeaks(t)
	nodes := newNet(t, 4, nil)
	c := build(t, nodes[0], nodes[1], nodes[2], nodes[3])
	if err := echoCheck(c, 1000, 1); err != nil {
		t.Fatal(err)
	}
	nodes[2].sw.Close()
	nodes[2].links.Close()
	waitClosed(t, c)
	waitUntil(t, "first hop to drop the circuit", func() bool { return nodes[1].sw.Joined() == 0 })
	waitUntil(t, "last hop to drop the circuit", func() bool { return nodes[3].sw.Joined() == 0 })
	if _, err := c.OpenStream(context.Background(), "echo"); !errors.Is(err, ErrCircuitClosed) {
		t.Fatalf("stream on a dead circuit: %v", err)
	}
}

func TestMaxJoinedCircuitsRefusesCreate(t *testing.T) {
	noLeaks(t)
	nodes := newNet(t, 3, func(i int, cfg *SwitchConfig) {
		if i == 1 {
			cfg.MaxJoinedCircuits = 2
		}
	})
	a := build(t, nodes[0], nodes[1])
	b := build(t, nodes[2], nodes[1])
	ctx, cancel := context.WithTimeout(context.Background(), circWait)
	defer cancel()
	_, err := nodes[0].sw.Build(ctx, descs(nodes[1]))
	if !errors.Is(err, ErrBuildFailed) || !errors.Is(err, ErrDestroyed) {
		t.Fatalf("third circuit: %v", err)
	}
	fails := nodes[0].eventsOf(EventFailed)
	if len(fails) != 1 {
		t.Fatalf("%d failed events", len(fails))
	}
	// The refusal carried RESOURCELIMIT.
	var sawLimit bool
	for _, e := range nodes[0].eventsOf(EventClosed) {
		sawLimit = sawLimit || e.Reason == proto.DestroyResourceLimit
	}
	if !sawLimit {
		t.Fatalf("no RESOURCELIMIT: %+v", nodes[0].eventsOf(EventClosed))
	}
	// Once one closes, a new one is accepted.
	a.Close()
	waitUntil(t, "the relay to drop a circuit", func() bool { return nodes[1].sw.Joined() == 1 })
	c := build(t, nodes[0], nodes[1])
	if err := echoCheck(c, 100, 1); err != nil {
		t.Fatal(err)
	}
	if err := echoCheck(b, 100, 2); err != nil {
		t.Fatal(err)
	}
}

func TestRelayEarlyCap(t *testing.T) {
	noLeaks(t)
	nodes := newNet(t, 3, nil)
	c := build(t, nodes[0], nodes[1])
	// Nine RELAY_EARLY cells: DROPs are harmless, the ninth breaks the cap.
	for i := range 9 {
		if err := c.ep.sendControl(0, true, proto.RelayDrop, 0, nil); err != nil {
			if i < 8 {
				t.Fatalf("early cell %d: %v", i, err)
			}
		}
	}
	waitClosed(t, c)
	if c.Reason() != proto.DestroyProtocol {
		t.Fatalf("closed with %v", c.Reason())
	}
}

func TestTruncateAndExtend(t *testing.T) {
	noLeaks(t)
	nodes := newNet(t, 5, nil)
	c := build(t, nodes[0], nodes[1], nodes[2], nodes[3])
	// Use up part of the circuit window with the old last hop, and leave a
	// stream open there: neither may outlive the truncation.
	if err := echoCheck(c, 150*proto.RelayDataSize, 9); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), circWait)
	defer cancel()
	old, err := c.OpenStream(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Truncate(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if c.Hops() != 2 {
		t.Fatalf("%d hops after truncate", c.Hops())
	}
	waitUntil(t, "the cut hop to drop the circuit", func() bool { return nodes[3].sw.Joined() == 0 })
	if err := c.Extend(ctx, nodes[4].desc); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Write([]byte("x")); err == nil {
		t.Fatal("stream to the cut hop still writable")
	}
	// Well past one window: SENDMEs from the new last hop must match.
	if err := echoCheck(c, 3*nodes[0].cfg.CircWindow*proto.RelayDataSize/2, 1); err != nil {
		t.Fatal(err)
	}
	if got := c.Path()[2].ID; got != nodes[4].id.ID {
		t.Fatal("path does not end at the new hop")
	}
}

func TestExtendToUnreachableFails(t *testing.T) {
	noLeaks(t)
	nodes := newNet(t, 3, nil)
	dead := nodes[2].desc
	nodes[2].sw.Close()
	nodes[2].links.Close()
	ctx, cancel := context.WithTimeout(context.Background(), circWait)
	defer cancel()
	_, err := nodes[0].sw.Build(ctx, []proto.NodeDescriptor{nodes[1].desc, dead})
	if !errors.Is(err, ErrBuildFailed) || !errors.Is(err, ErrTruncated) {
		t.Fatalf("build to a dead node: %v", err)
	}
	waitUntil(t, "relay to drop the partial circuit", func() bool { return nodes[1].sw.Joined() == 0 })
}

func TestUnknownServiceRefused(t *testing.T) {
	noLeaks(t)
	nodes := newNet(t, 2, nil)
	c := build(t, nodes[0], nodes[1])
	_, err := c.OpenStream(context.Background(), "nope")
	if !errors.Is(err, ErrStreamRefused) {
		t.Fatalf("open to a missing service: %v", err)
	}
	if err := echoCheck(c, 10, 1); err != nil {
		t.Fatal(err)
	}
}

func TestDestroyReasonReachesEveryHop(t *testing.T) {
	noLeaks(t)
	nodes := newNet(t, 4, nil)
	c := build(t, nodes[0], nodes[1], nodes[2], nodes[3])
	c.Close()
	for i, n := range nodes[1:] {
		waitUntil(t, fmt.Sprintf("hop %d to close", i+1), func() bool { return len(n.eventsOf(EventClosed)) == 1 })
		if r := n.eventsOf(EventClosed)[0].Reason; r != proto.DestroyFinished {
			t.Errorf("hop %d closed with %v, want FINISHED", i+1, r)
		}
	}
	if got := nodes[0].eventsOf(EventClosed); len(got) != 1 || got[0].Reason != proto.DestroyFinished || len(got[0].Path) != 3 {
		t.Errorf("origin close events: %+v", got)
	}
}

func TestBuildWithPreviousOnionKey(t *testing.T) {
	noLeaks(t)
	nodes := newNet(t, 3, nil)
	old := nodes[2].desc
	if err := nodes[2].id.RotateOnion(time.Now()); err != nil {
		t.Fatal(err)
	}
	// A client still holding the old descriptor builds through the grace
	// period, as does one with the new.
	c := build(t, nodes[0], nodes[1])
	ctx, cancel := context.WithTimeout(context.Background(), circWait)
	defer cancel()
	if err := c.Extend(ctx, old); err != nil {
		t.Fatalf("extend with the previous onion key: %v", err)
	}
	if err := echoCheck(c, 1000, 1); err != nil {
		t.Fatal(err)
	}
	fresh, err := nodes[2].id.Descriptor(old.Addrs, old.Flags, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[0].sw.Build(ctx, []proto.NodeDescriptor{nodes[1].desc, fresh}); err != nil {
		t.Fatalf("with the new key: %v", err)
	}
	// A descriptor altered on the way is refused before any handshake...
	bogus := fresh
	bogus.OnionKey = nodes[1].desc.OnionKey
	if _, err := nodes[0].sw.Build(ctx, []proto.NodeDescriptor{nodes[1].desc, bogus}); err == nil {
		t.Fatal("built with a descriptor whose signature fails")
	}
	// ...and a signed one naming a key the node does not hold fails the
	// handshake.
	bogus.Sign(nodes[2].id.Key)
	if _, err := nodes[0].sw.Build(ctx, []proto.NodeDescriptor{nodes[1].desc, bogus}); !errors.Is(err, ErrTruncated) {
		t.Fatalf("built with an onion key the node does not hold: %v", err)
	}
}

func TestCreateWithIDFromWrongHalfRefused(t *testing.T) {
	noLeaks(t)
	nodes := newNet(t, 1, nil)
	id, err := NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *proto.Cell, 4)
	raw := link.NewLinks(id.Key, link.DefaultConfig())
	raw.SetHandlers(link.Handlers{Cell: func(l link.Conn, c *proto.Cell) { got <- c }})
	defer raw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), circWait)
	defer cancel()
	l, err := raw.Get(ctx, nodes[0].id.ID, nodes[0].desc.Addrs[0].String())
	if err != nil {
		t.Fatal(err)
	}
	// We dialed, so our IDs must have the top bit set; 5 does not.
	c := proto.GetCell()
	c.SetCircID(5)
	c.SetCommand(proto.CmdCreate2)
	if err := l.SendCell(c); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-got:
		if d.Command() != proto.CmdDestroy || d.CircID() != 5 || proto.DestroyReason(d.Payload()[0]) != proto.DestroyProtocol {
			t.Fatalf("got %v on %d reason %d", d.Command(), d.CircID(), d.Payload()[0])
		}
	case <-time.After(circWait):
		t.Fatal("no DESTROY")
	}
	if nodes[0].sw.Joined() != 0 {
		t.Fatal("circuit joined")
	}
}
