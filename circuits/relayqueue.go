package circuits

import (
	"sync"

	"veil/proto"
)

// relayQueue is the input of a relayed circuit (relayCirc): the cells the
// link handlers hand it, the outcomes of its dials and a kill. It costs
// nothing while idle: its buffers are allocated when cells come and
// released when the circuit goes quiet, and no goroutine waits on it. The
// first input to an idle queue starts a goroutine (relayCirc.run) that
// owns the circuit's core until the queue is empty again; running says
// whether one does, so there is never more than one.
//
// The bound (max, SwitchConfig.QueueCells) counts the cells queued plus
// those of the batch the goroutine is working through: a batch is
// accounted for once it is done, so a peer cannot have more than max cells
// held for a circuit, however slowly the goroutine sends.
type relayQueue struct {
	mu      sync.Mutex
	max     int
	held    int       // cells queued or in the batch being handled
	cells   []inbound // queued, in arrival order
	spare   []inbound // the last batch's buffer, emptied, for the next swap
	dialed  []relayEvent
	killed  proto.DestroyReason // the first kill's reason; DestroyNone: none
	running bool                // a goroutine owns the circuit (or it is over)
	closed  bool                // the circuit is over: inputs are dropped
}

// The buffers grow from nothing as append doubles them: a circuit that
// only ever sees a few control cells at a time keeps slices of a few
// slots. A busy circuit keeps its buffers (allocating them per burst cost
// a dozen allocations per 64 KiB relayed); the idle reaper drops them
// once the circuit has been quiet for one of its rounds (claim).

// push queues a cell (or a link's closing, it.c == nil). It reports
// whether the queue had room, and whether the caller must start the
// goroutine. Inputs of a circuit that is over are dropped.
func (q *relayQueue) push(it inbound) (ok, start bool) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		if it.c != nil {
			proto.PutCell(it.c)
		}
		return true, false
	}
	if q.held >= q.max {
		q.mu.Unlock()
		return false, false
	}
	q.cells = append(q.cells, it)
	q.held++
	start = q.wake()
	q.mu.Unlock()
	return true, start
}

// pushDialed queues the outcome of a dial; dials run one at a time, so
// these are few and not counted against max.
func (q *relayQueue) pushDialed(ev relayEvent) (start bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	q.dialed = append(q.dialed, ev)
	return q.wake()
}

// kill asks for the circuit's end with reason; the first kill counts.
func (q *relayQueue) kill(reason proto.DestroyReason) (start bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || q.killed != proto.DestroyNone {
		return false
	}
	q.killed = reason
	return q.wake()
}

// wake marks the queue owned and reports whether it was not (the caller
// then starts the goroutine). Caller holds mu.
func (q *relayQueue) wake() bool {
	if q.running {
		return false
	}
	q.running = true
	return true
}

// take hands the goroutine everything queued: the kill, if any, the dial
// outcomes and the cells, accounting for the previous batch (done, which
// take empties and keeps as the next buffer). With nothing queued it
// releases the queue (running false) and returns
// more false: the goroutine must then exit without touching the circuit.
func (q *relayQueue) take(done []inbound) (kill proto.DestroyReason, dialed []relayEvent, cells []inbound, more bool) {
	clear(done) // the cells are the core's now, the links need not be kept
	q.mu.Lock()
	defer q.mu.Unlock()
	q.held -= len(done)
	if done != nil {
		q.spare = done[:0]
	}
	kill, q.killed = q.killed, proto.DestroyNone
	dialed, q.dialed = q.dialed, nil
	if kill == proto.DestroyNone && len(dialed) == 0 && len(q.cells) == 0 {
		q.running = false
		return proto.DestroyNone, nil, nil, false
	}
	cells, q.cells = q.cells, q.spare
	q.spare = nil
	return kill, dialed, cells, true
}

// claim takes the circuit for the idle reaper when the queue is empty and
// no goroutine owns it: the buffers go, and the caller owns the circuit
// (as run does) until release. False: it is busy, or over.
func (q *relayQueue) claim() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.running || len(q.cells) > 0 {
		return false
	}
	q.cells, q.spare = nil, nil
	q.running = true
	return true
}

// release gives back what claim took. It reports whether inputs came
// meanwhile: the caller must then start the goroutine, which owns the
// circuit from there.
func (q *relayQueue) release() (start bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.killed == proto.DestroyNone && len(q.dialed) == 0 && len(q.cells) == 0 {
		q.running = false
		return false
	}
	return true
}

// close ends the queue: later inputs are dropped, no goroutine starts
// again. It returns the cells still queued, for the caller to release.
func (q *relayQueue) close() []inbound {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed, q.running = true, true
	cells := q.cells
	q.cells, q.spare, q.dialed, q.held = nil, nil, nil, 0
	return cells
}
