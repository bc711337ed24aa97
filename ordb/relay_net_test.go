package ordb

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"veil/chunkstore"
	"veil/circuits"
	"veil/proto"
)

// smallNet is a network of n infrastructure nodes with no DHT lookups
// (references come from DB_INFO and DB_ANNOUNCE only) and peers.
func smallNet(t *testing.T, n int, tune func(*RelayConfig)) (*testNet, []*netNode, context.Context) {
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	net := newTestNet(t, ctx)
	t.Cleanup(net.close)
	var infra []*netNode
	for range n {
		infra = append(infra, net.addInfra("infra", func(c *RelayConfig) {
			c.DHT = nil
			if tune != nil {
				tune(c)
			}
		}))
	}
	return net, infra, ctx
}

// publishOn publishes size random bytes in p's store.
func publishOn(t *testing.T, ctx context.Context, p *netNode, size int) (proto.HashName, []byte) {
	t.Helper()
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i>>9)
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	_, name, err := p.store.Publish(ctx, priv, "application/octet-stream", 1_700_000_000, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return name, data
}

func opener(c *circuits.Circuit) *circuitOpener {
	return (&circuitOpenerPair{circ: c}).opener()
}

// An ORDB that corrupts the chunks it relays: the requester detects every
// bad range (Fetch verifies before storing) and gets it elsewhere; the
// result is identical.
func TestORDBCorruptingInTransit(t *testing.T) {
	net, infra, ctx := smallNet(t, 4, nil)
	bad, good := infra[2], infra[3]
	var tampered atomic.Int64
	bad.relay.tamper = func(m proto.DBMessage) proto.DBMessage {
		if d, ok := m.(proto.DBData); ok && d.Chunk%3 == 0 {
			tampered.Add(1)
			d.Data = clone(d.Data)
			d.Data[len(d.Data)/2] ^= 0x40
			return d
		}
		return m
	}
	b, r := net.addPeer("B"), net.addPeer("R")
	for _, o := range []*netNode{bad, good} {
		b.circs.add(net.build(b, infra[0], o))
	}
	name, data := publishOn(t, ctx, b, 498*64*20)
	if _, err := b.peer.Advertise(ctx, name); !errors.Is(err, ErrTooFewORDBs) {
		t.Fatalf("advertise to 2 ORDBs: %v, want ErrTooFewORDBs", err)
	}
	errs := fetchVia(t, ctx, r.store, name, opener(net.build(r, infra[1], bad)), opener(net.build(r, infra[1], good)))
	if tampered.Load() == 0 || len(errs) == 0 {
		t.Fatalf("tampered %d messages, requester saw %d errors", tampered.Load(), len(errs))
	}
	for _, err := range errs {
		if errors.Is(err, ErrProtocol) || errors.Is(err, ErrUnavailable) {
			t.Fatalf("want a verification failure, got %v", err)
		}
	}
	if got := readAll(t, r.store, name); !bytes.Equal(got, data) {
		t.Fatal("copy differs")
	}
}

// ORDBs whose lists point at each other in a cycle (P1 -> P2 -> P3 -> P1,
// each told by the next one that it can reach the name, which nobody
// holds): a query ends in DB_END UNAVAILABLE after a bounded number of
// forwards.
func TestORDBCycleEnds(t *testing.T) {
	net, infra, ctx := smallNet(t, 3, nil)
	name := proto.HashName{0xc1, 0xc1}
	for i := range 3 {
		from, to := infra[(i+1)%3], infra[i] // from tells to: "I can reach name"
		c := net.build(from, to)
		s, err := c.OpenStream(ctx, ORDBDest)
		if err != nil {
			t.Fatal(err)
		}
		if err := newMsgConn(s).send(proto.DBAnnounce{HashName: name}); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range infra {
		waitFor(t, ctx, "announcements", func() bool { f, _ := o.relay.Refs(name); return len(f) == 1 })
	}
	r := net.addPeer("R")
	s, err := net.build(r, infra[0]).OpenStream(ctx, ORDBDest)
	if err != nil {
		t.Fatal(err)
	}
	mc := newMsgConn(s)
	if err := mc.send(proto.DBQuery{HashName: name, RequestID: 77}); err != nil {
		t.Fatal(err)
	}
	cmd, msg, err := mc.recv()
	if err != nil || cmd != proto.RelayDBEnd {
		t.Fatalf("got %v %v, want DB_END", cmd, err)
	}
	if e, _ := proto.ParseDBEnd(msg); e.Reason != proto.DBEndUnavailable {
		t.Fatalf("reason %v", e.Reason)
	}
	var forwards, ends int64
	for _, o := range infra {
		st := o.relay.Stats()
		forwards += st.Forwards
		ends += st.Ends
	}
	t.Logf("cycle: %d forwards, %d DB_ENDs", forwards, ends)
	if forwards == 0 || forwards > proto.MaxCounter {
		t.Fatalf("%d forwards, want 1..%d", forwards, proto.MaxCounter)
	}
	if ends > 2*proto.MaxCounter {
		t.Fatalf("%d DB_ENDs", ends)
	}
}

// An ORDB answers from its served store (what its user seeds): static
// content whole, and a live stream's descriptor preceded by DB_LIVE_START,
// two windows behind the newest chunk.
func TestRelayServesItsSeeds(t *testing.T) {
	served := openStore(t, "served.db")
	net, infra, ctx := smallNet(t, 2, func(c *RelayConfig) { c.Seeds = served; c.Core.WindowChunks = 10 })
	_, priv, _ := ed25519.GenerateKey(nil)
	data := bytes.Repeat([]byte("seeded by the user "), 5000)
	_, name, err := served.Publish(ctx, priv, "text/plain", 1_700_000_000, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	lp, err := served.NewLivePublisher(priv, "video/webm", 1_700_000_000)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := lp.Append(ctx, uint32(1_700_000_000+i), bytes.Repeat([]byte{byte(i)}, 498)); err != nil {
			t.Fatal(err)
		}
	}
	if err := served.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	o := infra[1] // its Relay serves `served`
	r := net.addPeer("R")
	rc := net.build(r, infra[0], o)
	fetchVia(t, ctx, r.store, name, opener(rc))
	if got := readAll(t, r.store, name); !bytes.Equal(got, data) {
		t.Fatal("copy differs")
	}
	s, err := rc.OpenStream(ctx, ORDBDest)
	if err != nil {
		t.Fatal(err)
	}
	mc := newMsgConn(s)
	mc.send(proto.DBQuery{HashName: lp.Name(), RequestID: 99})
	cmd, msg, err := mc.recv()
	if err != nil || cmd != proto.RelayDBLiveStart {
		t.Fatalf("got %v %v, want DB_LIVE_START", cmd, err)
	}
	if ls, _ := proto.ParseDBLiveStart(msg); ls.Chunk != 50-2*10 {
		t.Fatalf("live start %d, want %d", ls.Chunk, 50-2*10)
	}
	if cmd, _, err := mc.recv(); err != nil || cmd != proto.RelayDBConnected {
		t.Fatalf("got %v %v, want DB_CONNECTED", cmd, err)
	}
	if st := o.relay.Stats(); st.LocalServes == 0 || st.Forwards != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// fakeFacilitators answers from a store, as the BitTorrent side would
// once it has the pieces.
type fakeFacilitators struct {
	st    atomic.Pointer[chunkstore.Store] // nil: none reachable
	asked atomic.Int64
}

func (f *fakeFacilitators) Ask(ctx context.Context, q proto.DBQuery) (CellStream, error) {
	f.asked.Add(1)
	st := f.st.Load()
	if st == nil {
		return nil, errors.New("no facilitator reachable")
	}
	client, server := streamPair()
	go (&Server{Store: st}).Serve(server)
	if err := newMsgConn(client).send(q); err != nil {
		return nil, err
	}
	return client, nil
}

// With nothing in its lists and nothing in the DHT, an ORDB asks the
// facilitators and relays their answers; with none reachable the
// requester gets DB_END UNAVAILABLE.
func TestRelayAsksFacilitators(t *testing.T) {
	st, name, data := publish(t, 498*200)
	fac := &fakeFacilitators{}
	fac.st.Store(st)
	net, infra, ctx := smallNet(t, 2, func(c *RelayConfig) { c.Core.Facilitators = true; c.Facilitators = fac })
	r := net.addPeer("R")
	rc := net.build(r, infra[0], infra[1])
	fetchVia(t, ctx, r.store, name, opener(rc))
	if got := readAll(t, r.store, name); !bytes.Equal(got, data) {
		t.Fatal("copy differs")
	}
	if fac.asked.Load() == 0 {
		t.Fatal("facilitators never asked")
	}
	fac.st.Store(nil)
	s, err := rc.OpenStream(ctx, ORDBDest)
	if err != nil {
		t.Fatal(err)
	}
	mc := newMsgConn(s)
	mc.send(proto.DBQuery{HashName: proto.HashName{0xfa}, RequestID: 5})
	expectEnd(t, mc, proto.DBEndUnavailable)
}

// checkLeaks fails t if goroutines started during it outlive it (after
// its other cleanups, with a bounded wait for sockets to close).
func checkLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		for i := 0; i < 100 && runtime.NumGoroutine() > before; i++ {
			time.Sleep(50 * time.Millisecond)
		}
		if g := runtime.NumGoroutine(); g > before {
			buf := make([]byte, 1<<20)
			t.Errorf("%d goroutines leaked:\n%s", g-before, buf[:runtime.Stack(buf, true)])
		}
	})
}

// A peer holding a live stream advertises its chunk range; the ORDB puts
// it in OR_streams_P, and a requester's descriptor query, relayed to the
// peer, comes back with DB_LIVE_START two windows behind the newest chunk
// known, then the chunks from there.
func TestRelayLiveStream(t *testing.T) {
	net, infra, ctx := smallNet(t, 2, func(c *RelayConfig) { c.Core.WindowChunks = 8 })
	p, r := net.addPeer("P"), net.addPeer("R")
	p.circs.add(net.build(p, infra[1]))
	_, priv, _ := ed25519.GenerateKey(nil)
	lp, err := p.store.NewLivePublisher(priv, "video/webm", 1_700_000_000)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		if _, err := lp.Append(ctx, uint32(1_700_000_000+i/10), bytes.Repeat([]byte{byte(i)}, 498)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.store.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := p.peer.AdvertiseStream(ctx, lp.Name()); n != 1 || err != nil {
		t.Fatalf("advertised on %d: %v", n, err)
	}
	waitFor(t, ctx, "the stream reference", func() bool {
		_, st := infra[1].relay.Refs(lp.Name())
		return len(st) == 1 && st[0].First == 0 && st[0].Last == 39
	})
	s, err := net.build(r, infra[0], infra[1]).OpenStream(ctx, ORDBDest)
	if err != nil {
		t.Fatal(err)
	}
	mc := newMsgConn(s)
	mc.send(proto.DBQuery{HashName: lp.Name(), RequestID: 1})
	cmd, msg, err := mc.recv()
	if err != nil || cmd != proto.RelayDBLiveStart {
		t.Fatalf("got %v %v, want DB_LIVE_START", cmd, err)
	}
	ls, _ := proto.ParseDBLiveStart(msg)
	if cmd, _, err := mc.recv(); err != nil || cmd != proto.RelayDBConnected {
		t.Fatalf("got %v %v, want DB_CONNECTED", cmd, err)
	}
	t.Logf("live start %d", ls.Chunk)
	if ls.Chunk > 39 || ls.Chunk+2*8 < 39 {
		t.Fatalf("live start %d, want about two windows (16) behind 39", ls.Chunk)
	}
	mc.send(proto.DBQuery{HashName: lp.Name(), Chunk: uint32(ls.Chunk), NbChunks: 4, RequestID: 2})
	if cmd, _, err := mc.recv(); err != nil || cmd != proto.RelayDBProof {
		t.Fatalf("got %v %v, want DB_PROOF", cmd, err)
	}
	cmd, msg, err = mc.recv()
	if err != nil || cmd != proto.RelayDBData {
		t.Fatalf("got %v %v, want DB_DATA", cmd, err)
	}
	if d, _ := proto.ParseDBData(msg); uint64(d.Chunk) != ls.Chunk || d.Data[0] != byte(ls.Chunk) {
		t.Fatalf("data for chunk %d starts %d", d.Chunk, d.Data[0])
	}
}
