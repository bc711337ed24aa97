package circuits

import (
	"runtime"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"veil/circuits/onion"
	"veil/proto"
)

// sinkLink is a link that accepts and drops every cell, never blocking.
type sinkLink struct{ peer proto.NodeID }

func (l *sinkLink) Peer() proto.NodeID              { return l.peer }
func (l *sinkLink) Inbound() bool                   { return true }
func (l *sinkLink) SendCell(c *proto.Cell) error    { proto.PutCell(c); return nil }
func (l *sinkLink) TrySendCell(c *proto.Cell) error { proto.PutCell(c); return nil }

// An idle relayed circuit costs a few KiB: its cell queue and everything
// sized for traffic are allocated on demand, not at CREATE2, and it holds
// no goroutine while nothing is queued for it. (Allocating the queue whole,
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
		_, create, err := onion.NewClientHandshake(nil, id.ID, id.OnionPublic())
		if err != nil {
			t.Fatal(err)
		}
		c := proto.GetCell()
		c.SetCircID(1<<31 | uint32(i+1)) // the top bit: IDs of the side that dialed
		c.SetCommand(proto.CmdCreate2)
		create.Append(c.Payload()[:0])
		creates[i] = c
	}
	prev := &sinkLink{peer: proto.NodeID{7}}

	before := idleMem(sw)
	for _, c := range creates {
		sw.handleCell(prev, c)
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
	if heap+stack > 4096 {
		t.Errorf("an idle relayed circuit costs %d bytes (heap %d + stacks %d), want <= 4096", heap+stack, heap, stack)
	}
	if goroutines > 0 {
		t.Errorf("%.3f goroutines per idle relayed circuit, want none", goroutines)
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
