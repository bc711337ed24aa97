package circuits

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"veil/circuits/link"
	"veil/proto"
)

// blockingDialer holds every dial until release is closed or the dial's
// context ends, as a next hop that does not answer would.
type blockingDialer struct {
	link.Dialer
	started chan proto.NodeID // one send per dial
	release chan struct{}
}

func (d blockingDialer) Dial(ctx context.Context, id proto.NodeID, addr string) (link.Conn, error) {
	d.started <- id
	select {
	case <-d.release:
		return d.Dialer.Dial(ctx, id, addr)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// newBlockedRelay makes four in-memory nodes whose node 1 dials through a
// blockingDialer, and an origin circuit from node 0 through node 1, being
// extended to node 2 with the dial held.
// The relay's circuits' closing reasons go to closed.
func newBlockedRelay(t *testing.T) (nodes []*cnode, c *Circuit, d blockingDialer, extended chan error, closed chan proto.DestroyReason) {
	t.Helper()
	nodes = newMemNodes(t, 4)
	r := nodes[1]
	closed = make(chan proto.DestroyReason, 8)
	r.sw.subscribe(func(e Event) {
		if e.Kind == EventClosed {
			closed <- e.Reason
		}
	})
	d = blockingDialer{Dialer: r.sw.links, started: make(chan proto.NodeID, 4), release: make(chan struct{})}
	r.sw.links = d // before any circuit: the switch reads it from circuit goroutines started later
	r.sw.cfg.ExtendTimeout = time.Hour
	c = build(t, nodes[0], r)
	extended = make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), circWait)
		defer cancel()
		extended <- c.Extend(ctx, nodes[2].desc)
	}()
	select {
	case id := <-d.started:
		if id != nodes[2].id.ID {
			t.Fatalf("relay dials %s", id.Short())
		}
	case <-time.After(circWait):
		t.Fatal("the relay never dialed the next hop")
	}
	return nodes, c, d, extended, closed
}

// While the relay dials the next hop for an EXTEND2, the circuit goes on:
// its streams carry data, and once the dial goes through the extension
// completes.
func TestRelayHandlesCellsWhileDialing(t *testing.T) {
	noLeaks(t)
	nodes, c, d, extended, _ := newBlockedRelay(t)
	defer c.Close()
	if err := echoCheck(c, 5000, 1); err != nil {
		t.Fatalf("echo at the relay while it dials: %v", err)
	}
	close(d.release)
	if err := <-extended; err != nil {
		t.Fatalf("extend: %v", err)
	}
	if c.Hops() != 2 {
		t.Fatalf("%d hops after the extend", c.Hops())
	}
	if err := echoCheck(c, 5000, 2); err != nil {
		t.Fatalf("echo at the new last hop: %v", err)
	}
	c.Close()
	for _, n := range nodes[1:3] {
		waitUntil(t, "the hops to drop the circuit", func() bool { return n.sw.Joined() == 0 })
	}
}

// A DESTROY that arrives while the dial is held tears the circuit down at
// once and cancels the dial.
func TestRelayDestroyWhileDialing(t *testing.T) {
	noLeaks(t)
	_, c, _, extended, closed := newBlockedRelay(t)
	c.Close()
	if err := <-extended; !errors.Is(err, ErrDestroyed) && !errors.Is(err, ErrCircuitClosed) {
		t.Fatalf("extend on a closed circuit: %v", err)
	}
	select {
	case r := <-closed:
		if r != proto.DestroyFinished {
			t.Fatalf("the relay's circuit ended with %v, want the origin's FINISHED", r)
		}
	case <-time.After(circWait):
		t.Fatal("the relay kept the circuit while its dial was held")
	}
}

// A next hop that never answers costs the circuit ExtendTimeout, in fake
// time: the origin then gets TRUNCATED CONNECTFAILED, its extension fails
// and the one-hop circuit goes on.
func TestRelayDialTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nodes := newMemNodes(t, 3)
		r := nodes[1]
		d := blockingDialer{Dialer: r.sw.links, started: make(chan proto.NodeID, 4), release: make(chan struct{})}
		r.sw.links = d
		timeout := r.sw.cfg.ExtendTimeout
		c := build(t, nodes[0], r)
		defer c.Close()
		t0 := time.Now()
		err := c.Extend(context.Background(), nodes[2].desc)
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("extend to a silent node: %v", err)
		}
		if took := time.Since(t0); took != timeout {
			t.Fatalf("the extension failed after %v, want ExtendTimeout %v", took, timeout)
		}
		if err := echoCheck(c, 1000, 1); err != nil {
			t.Fatalf("the circuit after a failed extension: %v", err)
		}
	})
}
