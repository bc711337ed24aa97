package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"veil/circuits"
	"veil/cmd/veil/internal/config"
	"veil/ordb"
	"veil/proto"
)

// The probing attacks a review found against an earlier main, kept as
// regression tests: each must fail now.

// probeNet is a bridge and eight relays that are ORDBs, all joined, and
// an anonymous publisher. (Anonymous, it builds its circuits to its ORDBs
// only once it has something to publish and the directory is whole, so
// the set of its ORDBs, which hold a reference to it by design, does not
// change under the test.)
func probeNet(t *testing.T, ctx context.Context) (nodes []*Node, pub *Node) {
	t.Helper()
	watchdog(t, 4*time.Minute) // before the nodes: its cleanup runs after their Close
	bc := testConfig(t, t.TempDir())
	bc.Roles.Bridge = true
	nodes = []*Node{startTest(t, ctx, bc)}
	for range 8 {
		nodes = append(nodes, startTest(t, ctx, testConfig(t, t.TempDir(), nodes[0].BridgeLine())))
	}
	pc := testConfig(t, t.TempDir(), nodes[0].BridgeLine())
	pc.Roles, pc.Listen, pc.Anonymous = config.Roles{}, "", true
	pub = startTest(t, ctx, pc)
	for _, n := range append([]*Node{pub}, nodes...) {
		waitFor(t, within(ctx, 60*time.Second), "directories", func() bool { return n.dir.Len() >= len(nodes)-1 })
	}
	return nodes, pub
}

// publishFetch publishes random bytes at pub and fetches them at a node
// that is neither the bridge, the publisher nor one of its ORDBs (those
// offer the content by design), which it returns.
func publishFetch(t *testing.T, ctx context.Context, pub *Node, nodes []*Node) (proto.HashName, *Node) {
	t.Helper()
	name := fetchNew(t, ctx, pub, nil)
	own := map[proto.NodeID]bool{}
	for _, id := range pub.peerCircs.Ever() {
		own[id] = true
	}
	for _, n := range nodes[1:] {
		if !own[n.ID()] {
			if _, err := n.Fetch(ctx, name, nil); err != nil {
				t.Fatalf("fetch: %v", err)
			}
			return name, n
		}
	}
	t.Fatal("every node is an ORDB of the publisher")
	return name, nil
}

// fetchNew publishes random bytes at pub and fetches them at getter (if
// not nil).
func fetchNew(t *testing.T, ctx context.Context, pub, getter *Node) proto.HashName {
	t.Helper()
	data := make([]byte, 40_000)
	rand.Read(data)
	p, err := pub.Publish(ctx, "application/octet-stream", bytes.NewReader(data))
	if err != nil || p.Advertised == 0 {
		t.Fatalf("publish: %+v %v", p, err)
	}
	if getter != nil {
		if _, err := getter.Fetch(ctx, p.Name, nil); err != nil {
			t.Fatalf("fetch: %v", err)
		}
	}
	return p.Name
}

// probeCounter is the hop counter of the probes: one below the maximum, so
// that an ORDB must answer from what it holds itself (it may neither
// look the content up nor relay to a provider it found: that would take
// the counter to the maximum), unless a holder advertised it there.
const probeCounter = proto.MaxCounter - 1

// probe sends one DB_QUERY on s and returns the command of the first
// whole answer (0 with the error when the stream ends first).
func probe(s ordb.CellStream, q proto.DBQuery) (proto.RelayCommand, error) {
	var f proto.DBFramer
	if err := f.Reset(proto.RelayHeader{}, proto.RelayDBQuery, q.Append(nil)); err != nil {
		return 0, err
	}
	var out [proto.RelayDataSize]byte
	for {
		cmd, data, ok := f.NextData(&out)
		if !ok {
			break
		}
		if err := s.WriteCell(cmd, data); err != nil {
			return 0, err
		}
	}
	var asm proto.Assembler
	var in [proto.RelayDataSize]byte
	for {
		cmd, k, err := s.ReadCell(in[:])
		if err != nil {
			return 0, err
		}
		mcmd, msg, err := asm.Feed(cmd, in[:k])
		if err != nil {
			return 0, err
		}
		if msg != nil {
			return mcmd, nil
		}
	}
}

// queryAt opens a stream to dest on c and probes it for name. A stream
// refused or ended gives 0.
func queryAt(ctx context.Context, c *circuits.Circuit, dest string, name proto.HashName, counter uint8) proto.RelayCommand {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := c.OpenStream(sctx, dest)
	if err != nil {
		return 0
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	cmd, _ := probe(s, proto.DBQuery{HashName: name, Counter: counter, RequestID: uint64(time.Now().UnixNano())})
	return cmd
}

// Hole 1, first attack: ask every ORDB-flagged node for H with the hop
// counter so high that an ORDB must answer from what it holds itself
// rather than look up and relay; the one that answers is the requester.
//
// Before the fix, the node's ORDB service read the very chunkstore its own
// fetches wrote (cmd/veil/localnode.go, testnet.go): the requester
// answered DB_CONNECTED for H, with its ID and address. Now fetched
// content lives in cache.db, which nothing serves, and the ORDB service
// holds nothing: every node answers DB_END, on the ORDB service and on
// the Peer service alike.
func TestProbeEveryORDBForFetchedContent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes, pub := probeNet(t, ctx)
	name, requester := publishFetch(t, ctx, pub, nodes)
	pubORDBs := map[proto.NodeID]bool{}
	for _, id := range pub.peerCircs.Ever() {
		pubORDBs[id] = true
	}
	attacker := nodes[0]
	if attacker == requester {
		attacker = nodes[2]
	}

	probed, sawRequester := 0, false
	for _, d := range attacker.dir.Nodes() {
		if d.Flags&proto.FlagORDB == 0 || d.ID == pub.ID() || pubORDBs[d.ID] {
			continue // the publisher and its ORDBs offer H by design: not what is probed
		}
		bctx, bcancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := attacker.sw.Build(bctx, []proto.NodeDescriptor{d})
		bcancel()
		if err != nil {
			t.Fatalf("circuit to %s: %v", d.ID.Short(), err)
		}
		for _, dest := range []string{ordb.ORDBDest, ordb.PeerDest} {
			if cmd := queryAt(ctx, c, dest, name, probeCounter); cmd == proto.RelayDBConnected || cmd == proto.RelayDBData {
				who := "node " + d.ID.Short()
				if d.ID == requester.ID() {
					who = "the requester"
				}
				t.Errorf("%s answered %v for the content at %q: it gives away that it holds it", who, cmd, dest)
			}
		}
		if d.ID == requester.ID() {
			sawRequester = true
			// The channel works: asked to relay, the requester's ORDB
			// service finds the content as any ORDB would.
			if cmd := queryAt(ctx, c, ordb.ORDBDest, name, 0); cmd != proto.RelayDBConnected {
				t.Errorf("a relayable query at the requester's ORDB service got %v, want DB_CONNECTED", cmd)
			}
		}
		c.Close()
		probed++
	}
	if !sawRequester {
		t.Fatalf("probed %d ORDBs, the requester among them: %v", probed, sawRequester)
	}
}

// Hole 1, second attack: an ORDB that a requester's circuit ends at opens
// a stream back along that circuit, to the ORDB and Peer services at the
// requester, and asks for content the requester fetched before.
//
// Before the fix, streams opened from either end of a circuit reached the
// requester's services, and its ORDB service answered from the store its
// fetches wrote: the hostile ORDB learnt what the owner of the circuit had
// fetched. Now the Peer answers only for names advertised on that very
// circuit, and the ORDB service holds nothing of its own.
func TestProbeBackOnRequesterCircuit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes, pub := probeNet(t, ctx)
	first, requester := publishFetch(t, ctx, pub, nodes)

	// The requester records the queries that reach its services.
	rec := newRecorder()
	requester.sw.Handle(ordb.ORDBDest, func(s *circuits.Stream) {
		in := ordb.FromCircuitStream(s)
		requester.relay.Serve(obsInStream{&obsStream{CellStream: in, obs: rec, dest: ordb.ORDBDest}, in})
	})
	requester.sw.Handle(ordb.PeerDest, func(s *circuits.Stream) {
		requester.peer.ServeStream(&obsStream{CellStream: s, obs: rec, dest: ordb.PeerDest}, streamCircuit(s))
	})

	// Every ORDB but the requester turns hostile: on each stream that
	// reaches it, it first probes back, then serves as usual. (Streams
	// of other ORDBs' one-hop circuits are probed too: their origin is
	// that ORDB, which may relay to the publisher, as any ORDB would.
	// Only the answers to probes that reached the requester count.)
	var mu sync.Mutex
	answers := map[uint64]proto.RelayCommand{}
	var nextID uint64 = 1 << 40
	for _, n := range nodes {
		if n == requester || n.relay == nil {
			continue
		}
		n := n
		n.sw.Handle(ordb.ORDBDest, func(s *circuits.Stream) {
			for _, dest := range []string{ordb.PeerDest, ordb.ORDBDest} {
				pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
				back, err := s.OpenStream(pctx, dest)
				pcancel()
				if err != nil {
					continue
				}
				mu.Lock()
				nextID++
				id := nextID
				mu.Unlock()
				_ = back.SetDeadline(time.Now().Add(10 * time.Second))
				cmd, _ := probe(back, proto.DBQuery{HashName: first, Counter: probeCounter, RequestID: id})
				back.Close()
				mu.Lock()
				answers[id] = cmd
				mu.Unlock()
			}
			n.relay.Serve(ordb.FromCircuitStream(s))
		})
	}
	// A second content, fetched through the hostile ORDBs. Another node
	// publishes it: a publisher advertises on ORDB streams of its own
	// circuits, and a probe back on those would rightly get an answer for
	// what it advertised there (the first content, if pub published this
	// one too), which is not what this test is about.
	var pub2 *Node
	for _, n := range nodes[1:] {
		if n != pub && n != requester {
			pub2 = n
			break
		}
	}
	fetchNew(t, ctx, pub2, requester)
	mu.Lock()
	defer mu.Unlock()
	reached := 0
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, ev := range rec.db {
		cmd, probed := answers[ev.RequestID]
		if ev.Cmd != proto.RelayDBQuery || ev.Sent || !probed {
			continue
		}
		reached++
		if cmd == proto.RelayDBConnected || cmd == proto.RelayDBData {
			t.Errorf("a stream opened back on the requester's circuit to %q got %v for content it fetched", ev.Dest, cmd)
		}
	}
	if reached == 0 {
		t.Fatalf("no probe reached the requester (%d probes)", len(answers))
	}
	for _, id := range pub.peerCircs.Ever() {
		if id == requester.ID() {
			t.Fatal("the requester became one of the publisher's ORDBs: its answers prove nothing")
		}
	}
}

// Hole 2: the descriptor, which anyone can get, carries the key that
// signed it; hashed, a key is a node ID, and the DHT maps IDs to
// addresses.
//
// Before the fix, Publish signed with the node's identity key:
// proto.NodeIDFromKey(descriptor key) was the publisher's ID. Now a key is
// made per content (or a pseudonym's is used), and Publish refuses the
// identity key outright.
func TestDescriptorKeyNamesNoNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes, pub := probeNet(t, ctx)
	name, requester := publishFetch(t, ctx, pub, nodes)
	d, err := requester.cache.Descriptor(name) // what any reader gets
	if err != nil {
		t.Fatal(err)
	}
	signer := proto.NodeIDFromKey(d.PublicKey)
	for _, n := range nodes {
		if signer == n.ID() {
			t.Fatalf("the descriptor's key hashes to node %s", n.ID().Short())
		}
		if _, ok := n.dir.Get(signer); ok {
			t.Fatalf("a directory knows the descriptor's key as a node")
		}
	}
	if r, err := requester.dht.FindNode(ctx, signer); err == nil {
		for _, c := range r.Closest {
			if c.ID == signer || c.ID == pub.ID() && signer == pub.ID() {
				t.Fatalf("the DHT names the signer: %v", c)
			}
		}
	}

	// The identity key is refused, with an error saying why.
	if _, err := pub.publishSigned(ctx, pub.id.Key, "text/plain", bytes.NewReader([]byte("x"))); !errors.Is(err, ErrIdentityKey) {
		t.Fatalf("publishing under the identity key: %v", err)
	}
	// A pseudonym signs every content with one key, kept 0600, not the
	// node's.
	var keys [][]byte
	for i := range 2 {
		p, err := pub.PublishAs(ctx, "alice", "text/plain", bytes.NewReader([]byte{byte(i), 1, 2}))
		if err != nil {
			t.Fatal(err)
		}
		d, err := pub.served.Descriptor(p.Name)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, d.PublicKey)
	}
	if !bytes.Equal(keys[0], keys[1]) || bytes.Equal(keys[0], pub.id.PublicKey()) {
		t.Fatal("pseudonym keys differ, or are the identity key")
	}
	// The same through the local API (veil put --pseudonym).
	c, err := Dial(ctx, pub.dataDir, "")
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.PutAs(ctx, "alice", "text/plain", bytes.NewReader([]byte{9, 9}))
	if err != nil {
		t.Fatal(err)
	}
	hn, _ := proto.ParseHashName(r.HashName)
	if d, err := pub.served.Descriptor(hn); err != nil || !bytes.Equal(d.PublicKey, keys[0]) {
		t.Fatalf("put through the API under the pseudonym: %v", err)
	}
	if _, err := c.PutAs(ctx, "../x", "text/plain", bytes.NewReader([]byte{1})); err == nil || !strings.Contains(err.Error(), "pseudonym") {
		t.Fatalf("a bad pseudonym through the API: %v", err)
	}
	fi, err := os.Stat(filepath.Join(pub.dataDir, PseudonymDir, "alice.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("pseudonym key file: %v %v", fi, err)
	}
	if err := os.Chmod(filepath.Join(pub.dataDir, PseudonymDir, "alice.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.PublishAs(ctx, "alice", "text/plain", bytes.NewReader([]byte("y"))); err == nil {
		t.Fatal("a pseudonym key others can read was used")
	}
	if _, err := pub.PublishAs(ctx, "../identity", "text/plain", bytes.NewReader([]byte("y"))); err == nil {
		t.Fatal("a pseudonym naming a path was used")
	}
}
