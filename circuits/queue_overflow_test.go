package circuits

import (
	"sync"
	"testing"
	"testing/synctest"

	"veil/proto"
)

// stuckLink is a link whose SendCell hands the cell to sent and then
// blocks until release is closed (a peer that stopped reading); DESTROYs
// sent without blocking are recorded.
type stuckLink struct {
	sent    chan *proto.Cell
	release chan struct{}

	mu       sync.Mutex
	destroys []proto.DestroyReason
}

func (l *stuckLink) Peer() proto.NodeID { return proto.NodeID{7} }
func (l *stuckLink) Inbound() bool      { return true }
func (l *stuckLink) SendCell(c *proto.Cell) error {
	l.sent <- c
	<-l.release
	return nil
}

func (l *stuckLink) TrySendCell(c *proto.Cell) error {
	if c.Command() == proto.CmdDestroy {
		l.mu.Lock()
		l.destroys = append(l.destroys, proto.DestroyReason(c.Payload()[0]))
		l.mu.Unlock()
	}
	proto.PutCell(c)
	return nil
}

// A peer that sends more cells than a circuit's queue holds (QueueCells)
// while the circuit's goroutine is stuck gets the circuit destroyed with
// RESOURCELIMIT, once the goroutine runs again; the cells it queued are
// handled or released, none leak into the switch.
func TestCircuitQueueOverflowDestroys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		id, err := NewEphemeralIdentity()
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultSwitchConfig()
		sw, err := NewSwitch(id, nil, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer sw.Close()
		prev := &stuckLink{sent: make(chan *proto.Cell, 1), release: make(chan struct{})}
		const circID = 0x80000005

		hs, c := create2To(t, circID, id)
		sw.HandleCell(prev, c)
		created := <-prev.sent // the circuit's goroutine now blocks sending it
		hop := finishHop(t, hs, created)
		proto.PutCell(created)

		for range cfg.QueueCells + 1 {
			sw.HandleCell(prev, sealedRelay(t, hop, circID, false, proto.RelayDrop, 0, nil))
		}
		synctest.Wait()
		if n := sw.Joined(); n != 1 {
			t.Fatalf("%d circuits before the goroutine ran again", n)
		}
		close(prev.release)
		synctest.Wait()
		if n := sw.Joined(); n != 0 {
			t.Fatalf("the switch still carries %d circuits after the overflow", n)
		}
		prev.mu.Lock()
		defer prev.mu.Unlock()
		if len(prev.destroys) != 1 || prev.destroys[0] != proto.DestroyResourceLimit {
			t.Fatalf("DESTROYs towards the peer: %v, want one RESOURCELIMIT", prev.destroys)
		}
	})
}
