package circuits

import (
	"runtime"
	"testing"
	"time"

	"veil/proto"
)

// newBareEndpoint is an origin endpoint with no path, for tests of the
// stream queues alone: control cells it would send fail (no hop) and are
// dropped, as a stream's reader ignores them.
func newBareEndpoint(t *testing.T) *endpoint {
	t.Helper()
	id, err := NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	sw, err := NewSwitch(id, nil, DefaultSwitchConfig())
	if err != nil {
		t.Fatal(err)
	}
	e := new(endpoint)
	e.init(sw, true)
	return e
}

// A stream whose receive queue never empties (the sender always a cell
// ahead of the reader, as in any long transfer to a slower reader) keeps a
// receive slice bounded by its backlog, not by every cell it ever carried.
func TestStreamQueueBoundedUnderSteadyBacklog(t *testing.T) {
	for _, reader := range []string{"ReadCell", "Read"} {
		t.Run(reader, func(t *testing.T) {
			e := newBareEndpoint(t)
			e.mu.Lock()
			s := e.newStreamLocked(1, "x")
			e.mu.Unlock()
			push := func() {
				c := proto.GetCell()
				if err := proto.PutRelay(c.PayloadArray(), proto.RelayHeader{Command: proto.RelayData, StreamID: 1}, []byte("ab")); err != nil {
					t.Fatal(err)
				}
				e.mu.Lock()
				s.push(c, 2)
				e.mu.Unlock()
			}
			push()
			push()
			buf := make([]byte, proto.RelayDataSize)
			for i := range 20000 {
				push()
				var n int
				var err error
				if reader == "Read" {
					n, err = s.Read(buf[:2])
				} else {
					_, n, err = s.ReadCell(buf)
				}
				if err != nil || n != 2 {
					t.Fatalf("read %d: %d bytes, %v", i, n, err)
				}
			}
			e.mu.Lock()
			queued, capacity := len(s.rq)-s.rqHead, cap(s.rq)
			e.mu.Unlock()
			if queued != 2 {
				t.Fatalf("%d cells queued, want 2", queued)
			}
			if capacity > 256 {
				t.Fatalf("receive slice grew to %d entries for a backlog of 2 cells", capacity)
			}
			s.Close()
		})
	}
}

// Moving a stream's deadline again and again (as net.Conn users do per
// request) keeps one timer per deadline, not one per call until each
// fires.
func TestStreamDeadlineTimersDoNotPileUp(t *testing.T) {
	e := newBareEndpoint(t)
	e.mu.Lock()
	s := e.newStreamLocked(1, "x")
	e.mu.Unlock()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	far := time.Now().Add(time.Hour)
	for i := range 200_000 {
		s.SetDeadline(far.Add(time.Duration(i)))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	// Timers piling up would hold 200,000 of them, 20 MB and more; the
	// bound leaves room for what other tests' goroutines allocate
	// meanwhile (4 MB was reached at 2.9 MB on a loaded machine).
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 12<<20 {
		t.Fatalf("heap grew by %d MB after 200000 SetDeadline calls", grew>>20)
	}
	// The last deadline still applies, and clearing it stops its timer.
	if err := s.SetDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(make([]byte, 1)); !isTimeout(err) {
		t.Fatalf("read past the deadline: %v", err)
	}
	s.SetDeadline(time.Time{})
	s.Close()
}
