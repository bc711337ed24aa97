package circuits

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"veil/circuits/onion"
	"veil/proto"
)

// sinkLink is a link that accepts and drops every cell, never blocking.
type sinkLink struct{ peer proto.NodeID }

func (l *sinkLink) Peer() proto.NodeID              { return l.peer }
func (l *sinkLink) Inbound() bool                   { return true }
func (l *sinkLink) SendCell(c *proto.Cell) error    { proto.PutCell(c); return nil }
func (l *sinkLink) TrySendCell(c *proto.Cell) error { proto.PutCell(c); return nil }

// An idle relayed circuit costs about a KiB: its cell queue, its onion
// hop's cipher state and everything else sized for traffic are allocated
// on demand, not at CREATE2, and it holds no goroutine while nothing is
// queued for it. (Allocating the queue whole,
// 2,512 slots, cost ~60 KiB per circuit; a parked goroutine per circuit
// another 2-8 KiB of stack.)
func TestIdleRelayedCircuitMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 handshakes")
	}
	synctest.Test(t, testIdleRelayedCircuitMemory)
}

func testIdleRelayedCircuitMemory(t *testing.T) {
	const n = 1000
	id, err := NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	var joined atomic.Int64
	cfg := DefaultSwitchConfig()
	cfg.MaxJoinedCircuits = n
	cfg.MaxJoinedPerLink = n
	cfg.CreateBurst = n       // every CREATE2 at once, on one link
	cfg.JoinedIdleTimeout = 0 // no reaper: its one goroutine would blur the count
	cfg.OnEvent = func(ev Event) {
		if ev.Kind == EventJoined {
			joined.Add(1)
		}
	}
	sw, err := NewSwitch(id, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Close()
	creates := make([]*proto.Cell, n)
	for i := range creates {
		// The top bit: the IDs of the side that dialed, the peer here.
		_, creates[i] = create2To(t, 1<<31|uint32(i+1), id)
	}
	prev := &sinkLink{peer: proto.NodeID{7}}

	before := idleMem(sw)
	for _, c := range creates {
		sw.HandleCell(prev, c)
	}
	synctest.Wait() // every CREATE2 answered, every circuit goroutine gone
	if joined.Load() != n || sw.Joined() != n {
		t.Fatalf("%d of %d circuits joined, the switch carries %d", joined.Load(), n, sw.Joined())
	}
	after := idleMem(sw)
	heap := (int64(after.heap) - int64(before.heap)) / n
	stack := (int64(after.stack) - int64(before.stack)) / n
	goroutines := float64(after.goroutines-before.goroutines) / n
	t.Logf("per idle relayed circuit: %d heap bytes, %d stack bytes, %.3f goroutines", heap, stack, goroutines)
	// The onion hop's cipher state is built on a direction's first cell:
	// a circuit that has carried none holds its keys only.
	if heap+stack > 1344 {
		t.Errorf("an idle relayed circuit costs %d bytes (heap %d + stacks %d), want <= 1344", heap+stack, heap, stack)
	}
	// Under 0.1, not 0: a few goroutines of earlier tests may still be
	// exiting; one goroutine per circuit would read as 1.
	if goroutines >= 0.1 {
		t.Errorf("%.3f goroutines per idle relayed circuit, want none", goroutines)
	}
}

// A relayed circuit that has carried a forward cell and gone idle again
// costs what an unused one does: with so few cells carried, it drops its
// hop's cipher state after the burst (parkHop), and holds no goroutine.
// The next cells rebuild the state where the keystream stopped: a wrong
// position would fail their digest and destroy the circuit.
func TestUsedIdleRelayedCircuitMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 handshakes")
	}
	synctest.Test(t, testUsedIdleRelayedCircuitMemory)
}

func testUsedIdleRelayedCircuitMemory(t *testing.T) {
	const n = 1000
	id, err := NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultSwitchConfig()
	cfg.MaxJoinedCircuits = n
	cfg.MaxJoinedPerLink = n
	cfg.CreateBurst = n // every CREATE2 at once, on one link
	cfg.JoinedIdleTimeout = 0
	sw, err := NewSwitch(id, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Close()
	hss := make([]*onion.ClientHandshake, n)
	creates := make([]*proto.Cell, n)
	for i := range creates {
		hss[i], creates[i] = create2To(t, 1<<31|uint32(i+1), id)
	}
	prev := &createdLink{sinkLink: sinkLink{peer: proto.NodeID{7}}}

	before := idleMem(sw)
	for _, c := range creates {
		sw.HandleCell(prev, c)
	}
	synctest.Wait()
	if len(prev.created) != n {
		t.Fatalf("%d CREATED2 of %d", len(prev.created), n)
	}
	// CREATED2 answers come in any order: match them by circuit ID.
	const kept = 10 // hops kept to send more cells after the measure
	type circ struct {
		hop *onion.Hop
		id  uint32
	}
	var again []circ
	for _, created := range prev.created {
		i := created.CircID()&^(1<<31) - 1
		hop := finishHop(t, hss[i], created)
		sw.HandleCell(prev, sealedRelay(t, hop, created.CircID(), false, proto.RelayDrop, 0, nil))
		if len(again) < kept {
			again = append(again, circ{hop, created.CircID()})
		}
		proto.PutCell(created)
	}
	synctest.Wait()
	prev.created, hss = nil, nil
	if got := sw.Joined(); got != n {
		t.Fatalf("the switch carries %d circuits, want %d", got, n)
	}
	after := idleMem(sw)
	heap := (int64(after.heap) - int64(before.heap)) / n
	stack := (int64(after.stack) - int64(before.stack)) / n
	goroutines := float64(after.goroutines-before.goroutines) / n
	t.Logf("per used, idle relayed circuit: %d heap bytes, %d stack bytes, %.3f goroutines", heap, stack, goroutines)
	if heap+stack > 1400 {
		t.Errorf("a used, idle relayed circuit costs %d bytes (heap %d + stacks %d), want <= 1400", heap+stack, heap, stack)
	}
	for round := range 3 {
		for _, c := range again {
			sw.HandleCell(prev, sealedRelay(t, c.hop, c.id, false, proto.RelayDrop, 0, nil))
		}
		synctest.Wait()
		if got := sw.Joined(); got != n {
			t.Fatalf("round %d of cells after the parking: the switch carries %d circuits, want %d (a resumed keystream failed)", round, got, n)
		}
	}
	if goroutines >= 0.1 { // see TestIdleRelayedCircuitMemory
		t.Errorf("%.3f goroutines per used, idle relayed circuit, want none", goroutines)
	}
}

type memFigures struct {
	heap, stack uint64
	goroutines  int
}

// idleMem collects garbage and reads the live heap, the stacks and the
// goroutine count (keep: what must stay live until then).
func idleMem(keep *Switch) memFigures {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	runtime.KeepAlive(keep)
	return memFigures{heap: ms.HeapAlloc, stack: ms.StackInuse, goroutines: runtime.NumGoroutine()}
}

// createdLink is a sinkLink that keeps the CREATED2 cells sent on it.
type createdLink struct {
	sinkLink
	mu      sync.Mutex
	created []*proto.Cell
}

func (l *createdLink) SendCell(c *proto.Cell) error {
	if c.Command() == proto.CmdCreated2 {
		l.mu.Lock()
		l.created = append(l.created, c)
		l.mu.Unlock()
		return nil
	}
	proto.PutCell(c)
	return nil
}

// A relayed circuit that moved cells keeps its queue buffers and its
// hop's cipher state while busy and loses them once the idle reaper finds
// it quiet; its goroutine is
// gone between bursts, and the next cell starts another that still has
// the circuit's state.
func TestRelayedQueueTrimmedWhenQuiet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		id, err := NewEphemeralIdentity()
		if err != nil {
			t.Fatal(err)
		}
		sw, err := NewSwitch(id, nil, DefaultSwitchConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer sw.Close()
		prev := &createdLink{sinkLink: sinkLink{peer: proto.NodeID{7}}}
		const circID = 1<<31 | 9
		hs, c := create2To(t, circID, id)
		sw.HandleCell(prev, c)
		synctest.Wait()
		if len(prev.created) != 1 {
			t.Fatalf("%d CREATED2 sent, want 1", len(prev.created))
		}
		hop := finishHop(t, hs, prev.created[0])
		sw.mu.RLock()
		rc := sw.circs[circKey{prev, circID}].(*relayCirc)
		sw.mu.RUnlock()

		burst := func(n int) {
			for range n {
				sw.HandleCell(prev, sealedRelay(t, hop, circID, false, proto.RelayDrop, 0, nil))
			}
			synctest.Wait()
		}
		buffers := func() int {
			rc.q.mu.Lock()
			defer rc.q.mu.Unlock()
			return cap(rc.q.cells) + cap(rc.q.spare)
		}
		burst(300)
		if got := rc.ep.stats.cellsRecv.Load(); got != 300 {
			t.Fatalf("%d cells handled, want 300", got)
		}
		// The circuit's goroutine has released it: no goroutine is left
		// owning an idle circuit. (runtime.NumGoroutine would count other
		// tests' goroutines still exiting, which made this check flaky.)
		rc.q.mu.Lock()
		running := rc.q.running
		rc.q.mu.Unlock()
		if running {
			t.Fatal("a goroutine still owns the circuit after the burst")
		}
		if buffers() == 0 {
			t.Fatal("no queue buffer kept after a burst")
		}
		if rc.core.hop.Parked() {
			t.Fatal("a busy circuit's cipher state was dropped after its burst")
		}
		sw.expireIdle(time.Now()) // sees the counters move
		if buffers() == 0 {
			t.Fatal("queue buffers dropped while the circuit was busy")
		}
		sw.expireIdle(time.Now()) // quiet since: trims, does not expire
		if b := buffers(); b != 0 {
			t.Fatalf("a quiet circuit keeps %d queue slots", b)
		}
		if sw.Joined() != 1 {
			t.Fatal("the quiet circuit was expired")
		}
		if !rc.core.hop.Parked() {
			t.Fatal("a quiet circuit keeps its cipher state")
		}
		burst(5) // a new goroutine picks the circuit up where it was
		if got := rc.ep.stats.cellsRecv.Load(); got != 305 {
			t.Fatalf("%d cells handled, want 305", got)
		}
		if sw.Joined() != 1 || rc.core.hop.Parked() {
			t.Fatalf("after the quiet spell, 5 more cells: %d circuits (want 1), parked %v (want false): the keystream did not resume", sw.Joined(), rc.core.hop.Parked())
		}
		sw.HandleCell(prev, newCell(circID, proto.CmdDestroy))
		synctest.Wait()
		if sw.Joined() != 0 {
			t.Fatal("DESTROY did not end the circuit")
		}
	})
}
