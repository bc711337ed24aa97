package ordb

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"math/rand/v2"
	"testing"
	"time"

	"veil/chunkstore"
	"veil/circuits"
	"veil/proto"
)

// fetchVia fetches name into st over streams opened on circuits, one
// after the other (a circuit whose ORDB fails or sends a bad chunk is
// left for the next; Fetch resumes from what st holds). It returns the
// errors met on the way.
func fetchVia(t *testing.T, ctx context.Context, st *chunkstore.Store, name proto.HashName, circs ...*circuitOpener) []error {
	t.Helper()
	return fetchWith(t, ctx, st, name, FetchConfig{}, circs...)
}

// fetchWith is fetchVia with a FetchConfig.
func fetchWith(t *testing.T, ctx context.Context, st *chunkstore.Store, name proto.HashName, cfg FetchConfig, circs ...*circuitOpener) []error {
	t.Helper()
	var errs []error
	for round := 0; round < 4; round++ {
		for _, c := range circs {
			s, err := c.open(ctx)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if _, err := Fetch(ctx, s, name, st, cfg); err != nil {
				errs = append(errs, err)
				continue
			}
			return errs
		}
	}
	t.Fatalf("fetch failed on every circuit: %v", errs)
	return errs
}

type circuitOpener struct {
	open func(ctx context.Context) (CellStream, error)
}

// TestORDBNetwork: B publishes and advertises through its own 3-hop
// circuits to its six ORDBs; A, whose six ORDBs share none with B's,
// fetches through a 3-hop circuit to one of them, which finds B's ORDBs
// in the DHT and relays; A then seeds (its user chose to) and C fetches
// partly from A. Nobody holds a link to A or B but their first hops.
func TestORDBNetwork(t *testing.T) {
	size, infraN := 20<<20, 22
	if testing.Short() {
		size, infraN = 2<<20, 20
	}
	const seedFetched = true // A's user chose to seed what it fetched
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	net := newTestNet(t, ctx)
	defer net.close()
	var infra []*netNode
	for i := range infraN {
		infra = append(infra, net.addInfra("infra"+string(rune('a'+i)), nil))
	}
	a, b, c := net.addPeer("A"), net.addPeer("B"), net.addPeer("C")
	net.joinDHT()
	if t.Failed() {
		return
	}
	ordbB, ordbA := infra[2:8], infra[8:14]
	relays := infra[14:]
	rng := rand.New(rand.NewPCG(1, 2))
	path := func(ordb *netNode) []*netNode {
		i := rng.IntN(len(relays))
		j := (i + 1 + rng.IntN(len(relays)-1)) % len(relays)
		return []*netNode{relays[i], relays[j], ordb}
	}
	firstHops := map[*netNode]map[*netNode]bool{a: {}, b: {}, c: {}}
	buildTo := func(p *netNode, ordb *netNode) *circuitOpenerPair {
		pp := path(ordb)
		firstHops[p][pp[0]] = true
		circ := net.build(p, pp...)
		p.circs.add(circ)
		return &circuitOpenerPair{circ: circ}
	}
	for _, o := range ordbB {
		buildTo(b, o)
	}
	var aCircs []*circuitOpenerPair
	for _, o := range ordbA {
		aCircs = append(aCircs, buildTo(a, o))
	}
	cCirc := buildTo(c, ordbA[0])

	// B publishes into its own store and advertises through its circuits.
	data := make([]byte, size)
	drng := rand.New(rand.NewPCG(uint64(size), 3))
	for i := range data {
		data[i] = byte(drng.Uint32())
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	_, name, err := b.store.Publish(ctx, priv, "video/mp4", 1_700_000_000, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := b.peer.Advertise(ctx, name); err != nil || n != len(ordbB) {
		t.Fatalf("B advertised on %d circuits: %v", n, err)
	}
	// Each of B's ORDBs STOREs a provider record naming itself.
	waitFor(t, ctx, "provider records", func() bool {
		found := 0
		for _, o := range ordbB {
			if o.relay.Stats().Stores > 0 {
				found++
			}
		}
		return found == len(ordbB)
	})
	waitFor(t, ctx, "a provider record in the DHT", func() bool {
		r, err := ordbA[1].dht.FindValue(ctx, name)
		return err == nil && len(r.Records) > 0
	})

	start := time.Now()
	// A becomes a source as it fetches: DB_INFO at 25, 50, 75 and 100 %,
	// if its user chose to seed what it fetches.
	quarters := 0
	progress := func(held, total uint64) {
		if q := int(4 * held / total); seedFetched && q > quarters {
			quarters = q
			_, _ = a.peer.Advertise(ctx, name)
		}
	}
	if errs := fetchWith(t, ctx, a.store, name, FetchConfig{Progress: progress}, aCircs[0].opener()); len(errs) > 0 {
		t.Logf("A's fetch restarted %d times: %v", len(errs), errs)
	}
	el := time.Since(start)
	t.Logf("A fetched %d MB through ORDB relaying in %v (%.1f MB/s)", size>>20, el, float64(size)/1e6/el.Seconds())
	if got := readAll(t, a.store, name); !bytes.Equal(got, data) {
		t.Fatal("A's copy differs")
	}
	st := ordbA[0].relay.Stats()
	if st.Lookups == 0 || st.Connects == 0 || st.Forwards == 0 {
		t.Fatalf("A's ORDB did not look up, connect and forward: %+v", st)
	}
	if bs := b.peer.Stats(); bs.Chunks == 0 || bs.Refused != 0 {
		t.Fatalf("B's peer stats %+v", bs)
	}

	// A seeds what it fetched (its user's choice) and C fetches.
	if seedFetched {
		// Whatever the last quarter said, all of it is held now.
		if _, err := a.peer.Advertise(ctx, name); err != nil {
			t.Fatal(err)
		}
		waitFor(t, ctx, "A's 100 % reference at C's ORDB", func() bool {
			files, _ := ordbA[0].relay.Refs(name)
			for _, r := range files {
				if !r.Relay && r.P == proto.MaxP {
					return true
				}
			}
			return false
		})
		t.Logf("A sent %d DB_INFOs to its %d ORDBs", a.peer.Stats().Adverts, len(ordbA))
	} else if st := a.peer.Stats(); st.Adverts != 0 {
		t.Fatalf("A advertised what its user did not choose to seed: %+v", st)
	}
	aBefore, bBefore := a.peer.Stats().Chunks, b.peer.Stats().Chunks
	fetchVia(t, ctx, c.store, name, cCirc.opener())
	if got := readAll(t, c.store, name); !bytes.Equal(got, data) {
		t.Fatal("C's copy differs")
	}
	fromA, fromB := a.peer.Stats().Chunks-aBefore, b.peer.Stats().Chunks-bBefore
	t.Logf("C got %d chunks from A, %d from B", fromA, fromB)
	if seedFetched && (fromA == 0 || fromB == 0) {
		t.Fatalf("C's fetch was not shared between A (%d chunks) and B (%d)", fromA, fromB)
	}

	// Connection records: A and B never meet; ORDBs see A, B, C only as
	// their first hops (none is: first hops are middle relays here).
	if net.linked(a, b) || net.linked(a, c) || net.linked(b, c) {
		t.Fatal("two peers held a link to each other")
	}
	for _, nd := range infra {
		for _, p := range []*netNode{a, b, c} {
			if net.linked(nd, p) && !firstHops[p][nd] {
				t.Errorf("%s held a link to %s without being its first hop", nd.name, p.name)
			}
		}
	}
	for _, o := range append(append([]*netNode{}, ordbA...), ordbB...) {
		for _, p := range []*netNode{a, b, c} {
			if net.linked(o, p) {
				t.Errorf("ORDB %s held a link to peer %s", o.name, p.name)
			}
		}
	}
}

type circuitOpenerPair struct{ circ *circuits.Circuit }

func (p *circuitOpenerPair) opener() *circuitOpener {
	return &circuitOpener{open: func(ctx context.Context) (CellStream, error) { return p.circ.OpenStream(ctx, ORDBDest) }}
}

func waitFor(t *testing.T, ctx context.Context, what string, ok func() bool) {
	t.Helper()
	for i := 0; i < 600; i++ {
		if ok() {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("no %s after 30 s", what)
}
