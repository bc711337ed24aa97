package window

import (
	"testing"
	"time"

	"veil/proto"
)

// liveDriver is a driver on a live stream read from start.
func liveDriver(t *testing.T, start uint64) *driver {
	d := newDriver(t, 5)
	var desc SendGet
	for _, g := range gets(d.out) {
		if g.Query.WantsDescriptor() {
			desc = g
		}
	}
	d.handle(Descriptor{Circuit: desc.Circuit, RequestID: desc.Query.RequestID, Live: true, Start: start}, time.Millisecond)
	return d
}

func skips(as []Action) []Skipped {
	var s []Skipped
	for _, a := range as {
		if k, ok := a.(Skipped); ok {
			s = append(s, k)
		}
	}
	return s
}

// A head more than LiveKeep windows past the read position: the chunks
// there are gone from what the publisher keeps, and reading jumps to two
// windows behind the head (Skipped, counted), asking from there only. A
// head within reach moves nothing.
func TestLiveSkipsBehindHead(t *testing.T) {
	d := liveDriver(t, 1000)
	cfg := d.w.cfg
	keep := uint64(cfg.LiveKeep * cfg.MinWindow)
	if as := d.handle(LiveHead{Length: 1000 + keep}, time.Millisecond); len(skips(as)) != 0 {
		t.Fatalf("skipped %v with the head %d chunks ahead (LiveKeep windows)", skips(as), keep)
	}
	head := 1000 + keep + 5000
	as := d.handle(LiveHead{Length: head}, time.Millisecond)
	want := Skipped{From: 1000, To: head - 2*uint64(cfg.MinWindow)}
	if s := skips(as); len(s) != 1 || s[0] != want {
		t.Fatalf("skips %v, want %v", s, want)
	}
	if st := d.w.Stats(); st.Skipped != want.To-want.From || st.Base != want.To {
		t.Fatalf("stats %+v after skipping to %d", st, want.To)
	}
	for _, g := range gets(as) {
		if uint64(g.Query.Chunk) < want.To {
			t.Fatalf("asked chunk %d after skipping to %d", g.Query.Chunk, want.To)
		}
	}
	if len(gets(as)) == 0 {
		t.Fatal("nothing asked from the new read position")
	}
}

// Published chunks at the read position that no ORDB has any more (DB_END
// UNAVAILABLE, asked again every LiveRetry) for LiveSkipAfter: reading
// jumps a window behind the newest chunk known. Before that, nothing is
// skipped; and chunks not yet published are waited for, never skipped.
func TestLiveSkipsUnavailable(t *testing.T) {
	d := liveDriver(t, 1000)
	cfg := d.w.cfg
	// Chunks up to 2,000 are published: the first answer brought that head.
	first := gets(d.out)
	var base SendGet
	for _, g := range first {
		if uint64(g.Query.Chunk) == 1000 && !g.Query.WantsDescriptor() {
			base = g
		}
	}
	if base.Query.NbChunks == 0 {
		t.Fatalf("chunk 1000 not asked: %v", first)
	}
	d.handle(LiveHead{Length: 2000}, 0)
	var skipped []Skipped
	start := d.now
	for i := 0; len(skipped) == 0; i++ {
		if d.now.Sub(start) > cfg.LiveSkipAfter+2*cfg.LiveRetry {
			t.Fatalf("no skip after %v of misses at the read position", d.now.Sub(start))
		}
		as := d.handle(End{Circuit: base.Circuit, RequestID: base.Query.RequestID, Reason: proto.DBEndUnavailable}, time.Millisecond)
		skipped = skips(as)
		if len(skipped) > 0 {
			if d.now.Sub(start) < cfg.LiveSkipAfter {
				t.Fatalf("skipped after %v of misses, before LiveSkipAfter %v", d.now.Sub(start), cfg.LiveSkipAfter)
			}
			break
		}
		// The read position is asked again: at once, or after LiveRetry.
		next := getOf(as, 1000)
		if next == nil {
			d.now = d.now.Add(cfg.LiveRetry)
			d.w.Tick(d.now)
			next = getOf(d.drain(), 1000)
		}
		if next == nil {
			t.Fatalf("chunk 1000 not asked again after miss %d", i+1)
		}
		base = *next
	}
	want := Skipped{From: 1000, To: 2000 - uint64(cfg.MinWindow)}
	if skipped[0] != want {
		t.Fatalf("skipped %v, want %v", skipped[0], want)
	}
	if st := d.w.Stats(); st.Skipped != want.To-want.From || st.Base != want.To {
		t.Fatalf("stats %+v", st)
	}
	for _, r := range d.out {
		// (The other circuits, never answered here, stall.)
		if rc, ok := r.(ReplaceCircuit); ok && rc.Why == WhyUnavailable {
			t.Fatalf("%v: nobody is blamed for a live stream's missing chunks", r)
		}
	}
}

// getOf returns the GET of chunk among as, or nil.
func getOf(as []Action, chunk uint64) *SendGet {
	for _, g := range gets(as) {
		if !g.Query.WantsDescriptor() && uint64(g.Query.Chunk) <= chunk && chunk < uint64(g.Query.Chunk)+uint64(g.Query.NbChunks) {
			return &g
		}
	}
	return nil
}
