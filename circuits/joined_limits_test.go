package circuits

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"veil/proto"
)

func TestJoinedLimitsConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		key   string
		tweak func(*SwitchConfig)
	}{
		{"MaxJoinedPerLink", func(c *SwitchConfig) { c.MaxJoinedPerLink = 0 }},
		{"JoinedIdleTimeout", func(c *SwitchConfig) { c.JoinedIdleTimeout = -time.Second }},
		{"ExitStartCells", func(c *SwitchConfig) { c.ExitStartCells = c.StreamIncrement - 1 }}, // no SENDME would ever come
		{"ExitStartCells", func(c *SwitchConfig) { c.ExitStartCells = c.StreamWindow + 1 }},
	} {
		c := DefaultSwitchConfig()
		tc.tweak(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s: %v", tc.key, err)
		}
	}
	c := DefaultSwitchConfig()
	c.JoinedIdleTimeout = 0 // disabled
	c.ExitStartCells = 0    // the whole window
	if err := c.Validate(); err != nil {
		t.Errorf("JoinedIdleTimeout 0: %v", err)
	}
}

func hasClosed(n *cnode, reason proto.DestroyReason) bool {
	for _, e := range n.eventsOf(EventClosed) {
		if e.Reason == reason {
			return true
		}
	}
	return false
}

// One peer cannot take more than MaxJoinedPerLink of a relay's slots;
// another peer still gets one, and a slot the peer frees is its again.
func TestMaxJoinedPerLinkRefusesCreate(t *testing.T) {
	noLeaks(t)
	nodes := newNet(t, 3, func(i int, cfg *SwitchConfig) {
		if i == 1 {
			cfg.MaxJoinedPerLink = 2
		}
	})
	a, r, b := nodes[0], nodes[1], nodes[2]
	a1 := build(t, a, r)
	a2 := build(t, a, r)
	ctx, cancel := context.WithTimeout(context.Background(), circWait)
	defer cancel()
	if _, err := a.sw.Build(ctx, descs(r)); !errors.Is(err, ErrBuildFailed) || !errors.Is(err, ErrDestroyed) {
		t.Fatalf("third circuit from one peer: %v", err)
	}
	if !hasClosed(a, proto.DestroyResourceLimit) {
		t.Fatalf("no RESOURCELIMIT: %+v", a.eventsOf(EventClosed))
	}
	if n := r.sw.Joined(); n != 2 {
		t.Fatalf("relay carries %d circuits, want 2", n)
	}
	bc := build(t, b, r)
	if err := echoCheck(bc, 100, 1); err != nil {
		t.Fatalf("the other peer's circuit: %v", err)
	}
	a1.Close()
	waitUntil(t, "the relay to drop a circuit", func() bool { return r.sw.Joined() == 2 })
	a3 := build(t, a, r)
	for i, c := range []*Circuit{a2, a3} {
		if err := echoCheck(c, 100, uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []*Circuit{a2, a3, bc} {
		c.Close()
	}
	waitUntil(t, "the relay to drop every circuit", func() bool { return r.sw.Joined() == 0 })
	r.sw.mu.Lock()
	left := len(r.sw.perLink)
	r.sw.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d links still counted with no circuit", left)
	}
}

// recordEvents keeps n's switch events in n.events (newNet does it
// through OnEvent; in-memory nodes need it added).
func recordEvents(n *cnode) {
	n.sw.subscribe(func(e Event) {
		n.mu.Lock()
		n.events = append(n.events, e)
		n.mu.Unlock()
	})
}

// A joined circuit idle for JoinedIdleTimeout (on the relay's clock) is
// destroyed at the origin and the next hop; one that moves cells is not.
// The relay's clock is a test clock and expireIdle is called by hand; the
// test runs in a synctest bubble so that synctest.Wait lets the cells an
// echo leaves behind (END, SENDME) cross the relay before it looks, which
// polling could not promise.
func TestJoinedIdleTimeoutDestroysIdleCircuit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clock := new(testClock)
		const timeout = 5 * time.Minute // the default: its own ticker fires every 75 s, which never pass here
		nodes := newMemNodes(t, 3)
		o, m, l := nodes[0], nodes[1], nodes[2]
		m.sw.cfg.Now = clock.Now // before any circuit reaches it
		recordEvents(m)
		recordEvents(l)
		idle := build(t, o, m, l)
		active := build(t, o, m, l)
		for i, c := range []*Circuit{idle, active} {
			if err := echoCheck(c, 100, uint64(i)); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		m.sw.expireIdle(clock.Now())
		for step := range 2 {
			clock.Advance(timeout * 3 / 5)
			if err := echoCheck(active, 100, uint64(step)); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
			m.sw.expireIdle(clock.Now())
		}
		// idle has now been idle for 6 minutes, active for none.
		synctest.Wait()
		if !isClosed(idle) {
			t.Fatal("the idle circuit is still open")
		}
		if r := idle.Reason(); r != proto.DestroyTimeout {
			t.Fatalf("idle circuit closed with %v, want TIMEOUT", r)
		}
		if m.sw.Joined() != 1 || l.sw.Joined() != 1 {
			t.Fatalf("the relay carries %d circuits, the last hop %d; want 1 each", m.sw.Joined(), l.sw.Joined())
		}
		if !hasClosed(l, proto.DestroyTimeout) || !hasClosed(m, proto.DestroyTimeout) {
			t.Fatalf("no TIMEOUT at the relay or the last hop: %+v %+v", m.eventsOf(EventClosed), l.eventsOf(EventClosed))
		}
		if isClosed(active) {
			t.Fatalf("active circuit closed: %v", active.Reason())
		}
		if err := echoCheck(active, 1000, 9); err != nil {
			t.Fatalf("active circuit after the idle one expired: %v", err)
		}
		// Left idle in turn, it goes too.
		synctest.Wait()
		m.sw.expireIdle(clock.Now())
		clock.Advance(timeout)
		m.sw.expireIdle(clock.Now())
		synctest.Wait()
		if !isClosed(active) {
			t.Fatal("the circuit left idle is still open")
		}
		if m.sw.Joined() != 0 || l.sw.Joined() != 0 {
			t.Fatalf("the relay carries %d circuits, the last hop %d; want none", m.sw.Joined(), l.sw.Joined())
		}
	})
}

// The switch's own ticker expires idle joined circuits, in fake time: a
// circuit idle for just under JoinedIdleTimeout lives, one idle for 1.25
// times it (the reaper looks every quarter) is gone with TIMEOUT. With the
// timeout disabled, no reaper runs and an idle circuit stays.
func TestJoinedIdleReaperRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nodes := newMemNodes(t, 3)
		const timeout = 5 * time.Minute // the default
		if got := nodes[1].sw.cfg.JoinedIdleTimeout; got != timeout {
			t.Fatalf("JoinedIdleTimeout %v, want the default %v", got, timeout)
		}
		nodes[2].sw.cfg.JoinedIdleTimeout = 0 // before any circuit reaches it
		c := build(t, nodes[0], nodes[1])
		kept := build(t, nodes[0], nodes[2])
		time.Sleep(timeout - time.Second)
		synctest.Wait()
		if isClosed(c) {
			t.Fatalf("closed (%v) before it was idle for JoinedIdleTimeout", c.Reason())
		}
		time.Sleep(timeout/4 + 2*time.Second)
		synctest.Wait()
		if !isClosed(c) {
			t.Fatal("still open after 1.25 JoinedIdleTimeout idle")
		}
		if r := c.Reason(); r != proto.DestroyTimeout {
			t.Fatalf("closed with %v, want TIMEOUT", r)
		}
		if n := nodes[1].sw.Joined(); n != 0 {
			t.Fatalf("the relay still carries %d circuits", n)
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		nodes[2].sw.mu.Lock()
		reaping := nodes[2].sw.reaping
		nodes[2].sw.mu.Unlock()
		if reaping {
			t.Fatal("a reaper runs with JoinedIdleTimeout 0")
		}
		if err := echoCheck(kept, 100, 1); err != nil {
			t.Fatal(err)
		}
		kept.Close()
	})
}
