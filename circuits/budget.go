package circuits

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"veil/circuits/link"
	"veil/proto"
)

// QueuedCellCost is what one queued cell is counted as against
// SwitchConfig.MaxQueuedBytes: the pooled cell and its share of the queue
// slices, rounded up.
const QueuedCellCost = proto.CellSize + 62

// budget is what the switch keeps to bound what hostile peers make it
// spend: the queued-cell budget and its out-of-memory handler, the CREATE2
// token buckets of links, and the extend dials running.
//
// The handler does not count every cell in and out (that would put a
// shared counter on every cell's path). It looks at every circuit's queues
// after each scanEvery cells queued by the link handlers: cells only pile
// up as they arrive, so between two looks at most scanEvery cells more can
// be held. For each circuit with a backlog it remembers when that backlog
// last made progress (cells taken out of it); a circuit whose queue does
// not move ages. When the total is over the budget, the circuits whose
// backlogs have been stuck the longest are destroyed first, as Tor
// destroys the circuits holding the oldest queued cells: an honest busy
// circuit moves its queue all the time and looks young.
type budget struct {
	maxCells  int    // MaxQueuedBytes in cells
	scanEvery uint64 // cells queued between two looks

	arrived  atomic.Uint64 // cells queued by the handlers since the last look
	scanning atomic.Bool   // a look is under way (only one at a time)
	kills    atomic.Uint64 // circuits destroyed by the handler, for tests and status

	mu       sync.Mutex                 // guards the fields below
	backlogs map[circuitQueue]backlog   // circuits with cells queued at the last look
	buckets  map[link.Conn]*TokenBucket // CREATE2 buckets by link
	rate     float64                    // CreateRate
	burst    int                        // CreateBurst
	killed   map[circuitQueue]struct{}  // destroyed by the handler, teardown pending
	last     int                        // total cells queued at the last look
	dials    chan struct{}              // one slot per extend dial running
	refused  atomic.Uint64              // CREATE2 refused by the buckets
}

// backlog is what the last look saw of one circuit's queues.
type backlog struct {
	progress uint64    // the circuit's count of cells taken out of its queues
	since    time.Time // when the backlog last moved (or appeared)
}

func (b *budget) init(cfg SwitchConfig) {
	b.maxCells = max(cfg.MaxQueuedBytes/QueuedCellCost, 1)
	// An eighth of the budget between two looks: the queues may overshoot
	// the budget by that much before the handler acts.
	b.scanEvery = uint64(max(b.maxCells/8, 64))
	b.backlogs = make(map[circuitQueue]backlog)
	b.buckets = make(map[link.Conn]*TokenBucket)
	b.killed = make(map[circuitQueue]struct{})
	b.rate, b.burst = cfg.CreateRate, cfg.CreateBurst
	b.dials = make(chan struct{}, cfg.MaxExtendDials)
}

// allowCreate takes a token from l's CREATE2 bucket at now; false means
// the CREATE2 must be refused before any key agreement.
func (b *budget) allowCreate(l link.Conn, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	tb := b.buckets[l]
	if tb == nil {
		// A bucket of CREATE2s: rate tokens per second, burst at most;
		// TokenBucket counts bytes, one CREATE2 is one "byte" here.
		tb = link.NewRateBucket(b.rate, b.burst, now)
		b.buckets[l] = tb
	}
	if !tb.TryTake(1, now) {
		b.refused.Add(1) // refused: it costs the peer nothing more than waiting
		return false
	}
	return true
}

// forgetLink drops the state kept for a link that closed.
func (b *budget) forgetLink(l link.Conn) {
	b.mu.Lock()
	delete(b.buckets, l)
	b.mu.Unlock()
}

// cellQueued is called by the link handlers for each cell queued to a
// circuit; every scanEvery cells it looks at the queues (in the caller's
// goroutine, one look at a time).
func (sw *Switch) cellQueued() {
	b := &sw.budget
	if b.arrived.Add(1) < b.scanEvery || !b.scanning.CompareAndSwap(false, true) {
		return
	}
	b.arrived.Store(0)
	sw.checkQueues(sw.cfg.Now())
	b.scanning.Store(false)
}

// QueuedCells returns the cells held in circuit queues at the last look of
// the out-of-memory handler, and the circuits it has destroyed so far.
func (sw *Switch) QueuedCells() (cells int, kills uint64) {
	sw.budget.mu.Lock()
	defer sw.budget.mu.Unlock()
	return sw.budget.last, sw.budget.kills.Load()
}

// queueState reports the cells q holds (its own queue and its streams')
// and its count of cells taken out of them, the measure of progress.
// Cells the origin sends (a DROP) are not progress for a stream backlog:
// only reading it is.
func queueState(q circuitQueue) (cells int, progress uint64) {
	var ep *endpoint
	switch q := q.(type) {
	case *relayCirc:
		q.q.mu.Lock()
		cells = q.q.held
		q.q.mu.Unlock()
		ep = &q.ep
	case *Circuit:
		cells = len(q.in)
		ep = &q.ep
	default:
		return 0, 0
	}
	ep.mu.Lock()
	streamCells := int(ep.pushed - ep.popped)
	popped := ep.popped
	ep.mu.Unlock()
	if streamCells > 0 {
		return cells + streamCells, uint64(popped)
	}
	return cells, ep.stats.cellsRecv.Load() + ep.stats.cellsSent.Load()
}

// checkQueues is the out-of-memory handler's look at the queues at now.
// Tests call it directly.
func (sw *Switch) checkQueues(now time.Time) {
	b := &sw.budget
	sw.mu.RLock()
	qs := make([]circuitQueue, 0, len(sw.circs))
	for k, q := range sw.circs {
		if rc, ok := q.(*relayCirc); ok && (k.l != rc.prev || k.id != rc.prevID) {
			continue // a relayed circuit's next-hop key: the same circuit
		}
		qs = append(qs, q)
	}
	sw.mu.RUnlock()

	type cand struct {
		q     circuitQueue
		cells int
		since time.Time
	}
	var cands []cand
	total := 0
	b.mu.Lock()
	live := make(map[circuitQueue]backlog, len(b.backlogs))
	for _, q := range qs {
		cells, progress := queueState(q)
		if cells == 0 {
			continue
		}
		total += cells
		bl, ok := b.backlogs[q]
		if !ok || bl.progress != progress {
			bl = backlog{progress: progress, since: now}
		}
		live[q] = bl
		if _, dying := b.killed[q]; !dying {
			cands = append(cands, cand{q, cells, bl.since})
		}
	}
	b.backlogs = live
	for q := range b.killed {
		if _, ok := live[q]; !ok {
			delete(b.killed, q) // its cells are gone
		}
	}
	b.last = total
	var victims []cand
	if total > b.maxCells {
		slices.SortStableFunc(cands, func(x, y cand) int { return x.since.Compare(y.since) })
		for _, c := range cands {
			if total <= b.maxCells {
				break
			}
			victims = append(victims, c)
			b.killed[c.q] = struct{}{}
			total -= c.cells
		}
	}
	b.mu.Unlock()
	for _, v := range victims {
		b.kills.Add(1)
		v.q.kill(proto.DestroyResourceLimit)
		if rc, ok := v.q.(*relayCirc); ok {
			rc.q.dropQueued()
		}
	}
}

// dropQueued releases the cells waiting in a relayed circuit's queue that
// the handler has condemned, keeping the news of closed links; cells in
// the batch its goroutine works through are its own and go when it does.
func (q *relayQueue) dropQueued() {
	q.mu.Lock()
	var drop []*proto.Cell
	keep := q.cells[:0]
	for _, it := range q.cells {
		if it.c != nil {
			drop = append(drop, it.c)
			continue
		}
		keep = append(keep, it)
	}
	clear(q.cells[len(keep):])
	q.cells = keep
	q.held -= len(drop)
	q.mu.Unlock()
	for _, c := range drop {
		proto.PutCell(c)
	}
}

// extendDial dials the next hop an EXTEND2 names, under the switch's
// rules: a non-global address is refused unless AllowPrivateExtend, and at
// most MaxExtendDials run at once; both refusals come at once, before any
// packet leaves. It returns the link, or the reason TRUNCATED carries to
// the origin.
func (sw *Switch) extendDial(ctx context.Context, next proto.NodeID, addr netip.AddrPort) (link.Conn, proto.DestroyReason) {
	if !sw.cfg.AllowPrivateExtend && !GlobalAddr(addr.Addr()) {
		return nil, proto.DestroyProtocol
	}
	select {
	case sw.budget.dials <- struct{}{}:
	default:
		return nil, proto.DestroyResourceLimit
	}
	defer func() { <-sw.budget.dials }()
	l, err := sw.links.Dial(ctx, next, addr.String())
	if err != nil {
		return nil, proto.DestroyConnectFailed
	}
	return l, proto.DestroyNone
}
