package circuits

import (
	"testing"

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
	sw, err := newSwitch(id, nil, DefaultSwitchConfig())
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
