package circuits

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"veil/proto"
)

// heapAlloc is the live heap after a collection.
func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// One attacker link opens the most circuits and streams the victim allows,
// fills the streams of a service that reads nothing (as a peer holding
// back SENDMEs leaves the ORDB's Serve blocked in WriteCell), and keeps
// the circuits alive with DROPs. The victim's heap stays within its
// queued-cell budget plus the cost of the circuits and streams themselves;
// an honest circuit through the victim works meanwhile; the DROPs do not
// save the attacker's circuits from the idle reaper.
//
// Without the budget the attacker's cells (about 30 MB here) all stay
// queued; without the per-circuit cap one circuit takes 4,050; with
// MaxStreams for joined circuits at 256 the stream count check fails.
func TestFloodMemoryBounded(t *testing.T) {
	noLeaks(t)
	const (
		budget      = 4 << 20 // the victim's MaxQueuedBytes: a small router's, scaled down
		cellsPerCrc = 900     // under MaxCircuitQueuedCells: only the node budget stops them
	)
	clock := new(testClock)
	nodes := newNet(t, 4, func(i int, cfg *SwitchConfig) {
		if i == 1 {
			cfg.MaxQueuedBytes = budget
			cfg.Now = clock.Now
		}
	})
	attacker, victim, honest, server := nodes[0], nodes[1], nodes[2], nodes[3]
	stop := make(chan struct{})
	victim.sw.Handle("stuck", func(s *Stream) {
		s.Write([]byte("x")) // an answer's first cell; then it reads nothing
		select {
		case <-s.e.done:
		case <-stop:
		}
	})
	defer close(stop)

	// The most circuits one link may hold, and the most streams each.
	maxCircs := victim.cfg.MaxJoinedPerLink
	circs := make([]*Circuit, maxCircs)
	for i := range circs {
		circs[i] = build(t, attacker, victim)
	}
	ctx, cancel := context.WithTimeout(context.Background(), circWait)
	defer cancel()
	maxStreams := victim.cfg.MaxJoinedStreams
	streams := make([][]*Stream, maxCircs)
	var wg sync.WaitGroup
	errs := make(chan error, maxCircs)
	for i, c := range circs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range maxStreams {
				s, err := c.OpenStream(ctx, "stuck")
				if err != nil {
					errs <- err
					return
				}
				streams[i] = append(streams[i], s)
			}
			// One more is refused.
			if _, err := c.OpenStream(ctx, "stuck"); !errors.Is(err, ErrStreamRefused) {
				errs <- errors.New("a stream beyond MaxJoinedStreams was not refused")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// One circuit fills its streams beyond MaxCircuitQueuedCells (4,000),
	// each within its window (500): it goes.
	data := make([]byte, proto.RelayDataSize)
	for _, s := range streams[0][:9] {
		for range 450 {
			if s.WriteCell(proto.RelayData, data) != nil {
				break
			}
		}
	}
	select {
	case <-circs[0].Done():
		if r := circs[0].Reason(); r != proto.DestroyResourceLimit {
			t.Fatalf("circuit over its queue cap closed with %v", r)
		}
	case <-time.After(circWait):
		t.Fatal("a circuit queued 4,050 cells and lives")
	}

	before := heapAlloc()
	// The others fill theirs, 900 cells each: about 30 MB in all.
	for i := 1; i < maxCircs; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range cellsPerCrc {
				if streams[i][k%maxStreams].WriteCell(proto.RelayData, data) != nil {
					return // destroyed by the victim
				}
			}
		}()
	}
	wg.Wait()
	// Wait until the victim has taken in what was sent: what its handler
	// sees stops changing.
	type look struct {
		queued int
		kills  uint64
	}
	var prev look
	for deadline, same := time.Now().Add(circWait), 0; same < 3 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		victim.sw.checkQueues(clock.Now())
		q, k := victim.sw.QueuedCells()
		if cur := (look{q, k}); cur == prev {
			same++
		} else {
			prev, same = cur, 0
		}
	}
	grown := int64(heapAlloc()) - int64(before)
	queued, kills := victim.sw.QueuedCells()
	t.Logf("heap grew %d KiB; %d cells queued at the victim, %d circuits destroyed by its budget", grown>>10, queued, kills)
	if kills == 0 {
		t.Fatal("the budget destroyed no circuit")
	}
	if queued*QueuedCellCost > budget {
		t.Fatalf("%d cells (%d bytes) queued, budget %d", queued, queued*QueuedCellCost, budget)
	}
	// The budget, an eighth over it between two looks, and a little for
	// the attacker's side of the streams in this same process.
	if limit := int64(budget + budget/8 + 2<<20); grown > limit {
		t.Fatalf("heap grew by %d bytes under the flood, want under %d", grown, limit)
	}

	// An honest circuit through the victim still carries a get.
	hc := build(t, honest, victim, server)
	if err := echoCheck(hc, 256<<10, 7); err != nil {
		t.Fatalf("honest circuit through the flooded node: %v", err)
	}
	hc.Close()

	// The attacker keeps its surviving circuits alive with DROPs; the
	// reaper ends them all the same.
	victim.sw.expireIdle(clock.Now())
	for range 2 {
		for _, c := range circs {
			if !isClosed(c) {
				c.ep.sendControl(lastHop, false, proto.RelayDrop, 0, nil)
			}
		}
		clock.Advance(victim.cfg.JoinedIdleTimeout * 3 / 5)
		victim.sw.expireIdle(clock.Now())
	}
	for _, c := range circs {
		select {
		case <-c.Done():
		case <-time.After(circWait):
			t.Fatal("an attacker circuit kept alive by DROPs outlived the idle timeout")
		}
	}
	for deadline := time.Now().Add(circWait); victim.sw.Joined() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("the victim still carries %d circuits", victim.sw.Joined())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
