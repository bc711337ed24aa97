package ordb

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"veil/kademlia"
	"veil/proto"
)

// fakeFacDHT answers FindValue(FacilitatorKey) with recs and counts calls.
type fakeFacDHT struct {
	mu    sync.Mutex
	recs  []proto.ProviderRecord
	calls int
}

func (d *fakeFacDHT) FindValue(_ context.Context, key proto.HashName) (kademlia.Result, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	if key != FacilitatorKey {
		return kademlia.Result{}, errors.New("unexpected key")
	}
	return kademlia.Result{Records: append([]proto.ProviderRecord(nil), d.recs...)}, nil
}

func (d *fakeFacDHT) Provide(context.Context, proto.HashName, uint8, bool) (kademlia.Result, error) {
	return kademlia.Result{}, nil
}

// fakeFacBuilder builds in-memory circuits; down refuses some nodes. Each
// stream it opens is served by serve.
type fakeFacBuilder struct {
	mu     sync.Mutex
	builds map[proto.NodeID]int
	down   map[proto.NodeID]bool
	got    chan proto.NodeID // the facilitator a query reached
}

type fakeFacCircuit struct {
	b    *fakeFacBuilder
	id   proto.NodeID
	done chan struct{}
}

func (c *fakeFacCircuit) OpenStream(context.Context) (CellStream, error) {
	client, server := streamPair()
	go func() {
		mc := newMsgConn(server)
		if _, _, err := mc.recv(); err == nil {
			c.b.got <- c.id
		}
	}()
	return client, nil
}
func (c *fakeFacCircuit) Done() <-chan struct{} { return c.done }
func (c *fakeFacCircuit) Close() error          { return nil }

func (b *fakeFacBuilder) BuildToFacilitator(_ context.Context, rec proto.ProviderRecord) (ORDBCircuit, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down[rec.ORDB] {
		return nil, errors.New("unreachable")
	}
	b.builds[rec.ORDB]++
	return &fakeFacCircuit{b: b, id: rec.ORDB, done: make(chan struct{})}, nil
}

// The finder asks configured facilitators first, then F-flagged records
// from the DHT (never a record without the flag, never itself), skips
// unreachable ones, keeps one circuit per facilitator, and looks the DHT
// up again only after Refresh (sooner while it found none).
func TestFacilitatorFinder(t *testing.T) {
	self, conf, good, noF := proto.NodeID{1}, proto.NodeID{2}, proto.NodeID{3}, proto.NodeID{4}
	dht := &fakeFacDHT{}
	b := &fakeFacBuilder{builds: map[proto.NodeID]int{}, down: map[proto.NodeID]bool{}, got: make(chan proto.NodeID, 16)}
	now := time.Unix(1000, 0)
	f, err := NewFacilitatorFinder(FinderConfig{Self: self, DHT: dht, Builder: b, Refresh: time.Minute, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	q := proto.DBQuery{HashName: proto.HashName{9}, RequestID: 7}
	// Nothing known: a clear error; the empty answer is asked again only
	// after Refresh/10.
	if _, err := f.Ask(ctx, q); !errors.Is(err, ErrNoFacilitator) {
		t.Fatalf("no facilitator: %v", err)
	}
	f.Ask(ctx, q)
	if dht.calls != 1 {
		t.Fatalf("%d DHT lookups, want 1 within Refresh/10", dht.calls)
	}
	dht.recs = []proto.ProviderRecord{{ORDB: noF}, {ORDB: self, Facilitator: true}, {ORDB: good, Facilitator: true}}
	now = now.Add(7 * time.Second)
	s, err := f.Ask(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if got := <-b.got; got != good {
		t.Fatalf("query reached %v, want the F-flagged record's node", got)
	}
	s.Close()
	// A configured facilitator comes first; when it is unreachable the
	// DHT's is used.
	f2, _ := NewFacilitatorFinder(FinderConfig{Self: self, DHT: dht, Builder: b, Configured: []proto.ProviderRecord{{ORDB: conf, Facilitator: true}}})
	for range 2 {
		s, err := f2.Ask(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if got := <-b.got; got != conf {
			t.Fatalf("query reached %v, want the configured facilitator", got)
		}
		s.Close()
	}
	if b.builds[conf] != 1 {
		t.Fatalf("%d circuits built to the configured facilitator, want 1 (kept)", b.builds[conf])
	}
	b.down[conf] = true
	f3, _ := NewFacilitatorFinder(FinderConfig{Self: self, DHT: dht, Builder: b, Configured: []proto.ProviderRecord{{ORDB: conf, Facilitator: true}}})
	s, err = f3.Ask(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if got := <-b.got; got != good {
		t.Fatalf("query reached %v, want the DHT's facilitator after the configured one failed", got)
	}
	s.Close()
	if b.builds[noF] != 0 {
		t.Fatal("a record without the F flag was used")
	}
}
