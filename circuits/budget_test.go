package circuits

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"veil/proto"
)

// fakeRelayed registers n relayed circuits on link l without handshakes,
// each with held cells in its queue, for the out-of-memory handler to look
// at.
func fakeRelayed(sw *Switch, l *sinkLink, n, held int) []*relayCirc {
	rcs := make([]*relayCirc, n)
	sw.mu.Lock()
	defer sw.mu.Unlock()
	for i := range rcs {
		rc := &relayCirc{sw: sw, prev: l, prevID: uint32(i + 1), q: relayQueue{max: sw.cfg.QueueCells, running: true}}
		rc.ep.init(sw, false)
		rc.q.held = held
		sw.circs[circKey{l, rc.prevID}] = rc
		rcs[i] = rc
	}
	return rcs
}

// The handler destroys the circuits whose backlog has been stuck longest,
// only as many as bring the total under the budget, and spares those that
// move.
func TestOutOfMemoryKillsOldestStuck(t *testing.T) {
	id, err := NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultSwitchConfig()
	cfg.MaxQueuedBytes = 1000 * QueuedCellCost
	sw, err := NewSwitch(id, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	l := &sinkLink{peer: proto.NodeID{9}}
	rcs := fakeRelayed(sw, l, 10, 0)
	setHeld := func(rc *relayCirc, n int) {
		rc.q.mu.Lock()
		rc.q.held = n
		rc.q.mu.Unlock()
	}
	t0 := time.Now()
	for _, rc := range rcs[:5] {
		setHeld(rc, 150)
	}
	sw.checkQueues(t0) // 750 cells: under the budget; five backlogs since t0
	// A second later five more circuits have 150 cells each, and the
	// first of the old ones has moved its queue.
	for _, rc := range rcs[5:] {
		setHeld(rc, 150)
	}
	rcs[0].ep.stats.sent(0)
	sw.checkQueues(t0.Add(time.Second)) // 1,500 cells: 3 circuits must go
	killed := func(rc *relayCirc) bool {
		rc.q.mu.Lock()
		defer rc.q.mu.Unlock()
		return rc.q.killed == proto.DestroyResourceLimit
	}
	var got []int
	for i, rc := range rcs {
		if killed(rc) {
			got = append(got, i)
		}
	}
	if len(got) != 4 || got[0] != 1 || got[3] != 4 {
		t.Fatalf("killed circuits %v, want the four stuck since the first look: [1 2 3 4]", got)
	}
	if q, kills := sw.QueuedCells(); q != 1500 || kills != 4 {
		t.Fatalf("QueuedCells = %d, %d kills", q, kills)
	}
	// The condemned are not counted again: a third look kills nobody more.
	sw.checkQueues(t0.Add(2 * time.Second))
	if _, kills := sw.QueuedCells(); kills != 4 {
		t.Fatalf("%d kills after a third look", kills)
	}
}

// BenchmarkCheckQueues is one look of the out-of-memory handler at 1,000
// relayed circuits, each with a backlog. The handler looks once per
// eighth of its budget's worth of cells queued (7,281 cells with the
// default 32 MiB), so this cost is spread over that many cells.
func BenchmarkCheckQueues(b *testing.B) {
	id, err := NewEphemeralIdentity()
	if err != nil {
		b.Fatal(err)
	}
	sw, err := NewSwitch(id, nil, DefaultSwitchConfig())
	if err != nil {
		b.Fatal(err)
	}
	fakeRelayed(sw, &sinkLink{peer: proto.NodeID{9}}, 1000, 10)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		sw.checkQueues(now)
	}
}

// FuzzLoadGuards: whatever is in the guards file, LoadGuards does not
// panic, and path selection with the guards it accepts finds a path or
// says no guard is usable (a file of MaxSampled guards none of which is
// listed: by design, until they are unlisted for DownTimeout).
func FuzzLoadGuards(f *testing.F) {
	f.Add([]byte(`{"version":1,"guards":[{"id":"0000000000000000000000000000000000000000","added":"2026-01-01T00:00:00Z","expires":"2027-01-01T00:00:00Z","last_listed":"2026-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`{"version":1,"guards":[]}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`[]`))
	dir := f.TempDir()
	now := time.Now()
	d := descAt(f, "11.1.0.1", proto.FlagRelay|proto.FlagORDB, now)
	e := descAt(f, "12.1.0.1", proto.FlagRelay|proto.FlagORDB, now)
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg := DefaultGuardConfig()
		cfg.Path = filepath.Join(dir, "g.json")
		if err := os.WriteFile(cfg.Path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		g, err := LoadGuards(cfg)
		if err != nil {
			return
		}
		rules := PathRules{Hops: 2, ExitFlags: proto.FlagORDB, SameSubnet: true, Guards: g, Now: now}
		if _, err := rules.Select([]proto.NodeDescriptor{d, e}, rand.New(rand.NewPCG(1, 1))); err != nil && !errors.Is(err, ErrNoPath) {
			t.Fatalf("guards %v from an accepted file: %v", g.IDs(), err)
		}
	})
}

// A condemned relayed circuit takes no more cells: its goroutine may be
// stuck sending to a full next link, and whatever it queued would stay
// until then.
func TestKilledRelayQueueDropsCells(t *testing.T) {
	q := relayQueue{max: 100, running: true} // a goroutine owns it (stuck)
	for range 10 {
		if ok, _ := q.push(inbound{c: proto.GetCell()}); !ok {
			t.Fatal("push refused")
		}
	}
	q.kill(proto.DestroyResourceLimit)
	q.dropQueued()
	for range 50 {
		if ok, _ := q.push(inbound{c: proto.GetCell()}); !ok {
			t.Fatal("push to a condemned queue reported overflow")
		}
	}
	if ok, _ := q.push(inbound{}); !ok { // a link's closing still gets through
		t.Fatal("link closing refused")
	}
	q.mu.Lock()
	held, queued := q.held, len(q.cells)
	q.mu.Unlock()
	if held != 1 || queued != 1 {
		t.Fatalf("condemned queue holds %d (%d queued), want only the link's closing", held, queued)
	}
	for _, it := range q.close() {
		if it.c != nil {
			proto.PutCell(it.c)
		}
	}
}
