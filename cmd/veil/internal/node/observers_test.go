package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"veil/cmd/veil/internal/config"
	"veil/ordb"
	"veil/proto"
)

// recorder is an Observer keeping everything a node saw.
type recorder struct {
	mu    sync.Mutex
	links map[proto.NodeID]netip.AddrPort // link peers and their addresses
	db    []DBEvent
	dht   []dhtSeen
	paths [][]proto.NodeID
}

type dhtSeen struct {
	from proto.NodeID
	typ  proto.DHTType
	key  proto.NodeID
}

func newRecorder() *recorder { return &recorder{links: map[proto.NodeID]netip.AddrPort{}} }

func (r *recorder) Link(peer proto.NodeID, remote netip.AddrPort, inbound bool) {
	r.mu.Lock()
	r.links[peer] = remote
	r.mu.Unlock()
}
func (r *recorder) DB(ev DBEvent) {
	r.mu.Lock()
	r.db = append(r.db, ev)
	r.mu.Unlock()
}
func (r *recorder) DHT(peer proto.NodeID, typ proto.DHTType, key proto.NodeID) {
	r.mu.Lock()
	r.dht = append(r.dht, dhtSeen{peer, typ, key})
	r.mu.Unlock()
}
func (r *recorder) Path(ids []proto.NodeID) {
	r.mu.Lock()
	r.paths = append(r.paths, append([]proto.NodeID(nil), ids...))
	r.mu.Unlock()
}

// sawLink reports whether the node had a link with id (and so its address).
func (r *recorder) sawLink(id proto.NodeID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.links[id]
	return ok
}

// requestIDs are the IDs of the DB_QUERYs for name the node sent itself.
func (r *recorder) requestIDs(name proto.HashName) map[uint64]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[uint64]bool{}
	for _, ev := range r.db {
		if ev.Cmd == proto.RelayDBQuery && ev.Sent && ev.Name == name {
			out[ev.RequestID] = true
		}
	}
	return out
}

// sawRequest reports whether the node handled (got or sent) a query with
// one of ids.
func (r *recorder) sawRequest(ids map[uint64]bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range r.db {
		if ev.Cmd == proto.RelayDBQuery && ids[ev.RequestID] {
			return true
		}
	}
	return false
}

// sawPublication reports whether the node learnt that someone offers
// name: a DB_INFO for it, or a query it forwarded to a publisher's Peer.
func (r *recorder) sawPublication(name proto.HashName) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range r.db {
		if ev.Name == name && (ev.Cmd == proto.RelayDBInfo || ev.Dest == ordb.PeerDest) {
			return true
		}
	}
	return false
}

// dhtFrom reports whether a DHT request for name came from id.
func (r *recorder) dhtFrom(id proto.NodeID, name proto.HashName) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range r.dht {
		if d.from == id && d.key == proto.NodeID(name) {
			return true
		}
	}
	return false
}

func (r *recorder) dhtAbout(name proto.HashName) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range r.dht {
		if d.key == proto.NodeID(name) && (d.typ == proto.DHTFindValue || d.typ == proto.DHTStore) {
			return true
		}
	}
	return false
}

func (r *recorder) ownPaths() [][]proto.NodeID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]proto.NodeID(nil), r.paths...)
}

// TestObservers: a network of 22 nodes in one process, each recording
// what it sees (links and their peers' addresses; every hash_name,
// request ID and chunk range of the DB_QUERYs and DB_INFOs it handles;
// the DHT requests it gets). An anonymous publisher publishes, and two
// anonymous requesters fetch. From the records: no node but the
// requester itself saw both the requester's address (a link with it)
// and what it asked (its request IDs, or a DHT request for the
// hash_name from it); no node but the publisher saw both the
// publisher's address and that the hash_name is offered. Each kind of
// observer is checked by name: first hop, middle relay, ORDB, DHT node,
// publisher's first hop, the other requester (docs/ARCHITECTURE.md,
// "Who learns what").
func TestObservers(t *testing.T) {
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	recs := map[proto.NodeID]*recorder{}
	var logs lockedBuffer // every node's log, at debug level
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	start := func(c config.Config) *Node {
		r := newRecorder()
		n, err := Start(Options{Config: c, Observer: r, Log: log})
		if err != nil {
			t.Fatal(err)
		}
		go n.Run(ctx)
		t.Cleanup(func() { n.Close() })
		recs[n.ID()] = r
		return n
	}
	bc := testConfig(t, t.TempDir())
	bc.Roles.ORDB, bc.Roles.Bridge = false, true // a bridge that is no ORDB: see the table's note
	bridge := start(bc)
	var public []*Node
	for i := range 18 {
		c := testConfig(t, t.TempDir(), bridge.BridgeLine())
		c.Roles.ORDB = i >= 7 // 7 relays, 11 relays that are ORDBs
		public = append(public, start(c))
	}
	anon := func() *Node {
		c := testConfig(t, t.TempDir(), bridge.BridgeLine())
		c.Roles, c.Listen, c.Anonymous = config.Roles{}, "", true
		return start(c)
	}
	pub, r1, r2 := anon(), anon(), anon()
	t0 := time.Now()
	for _, n := range append([]*Node{bridge, pub, r1, r2}, public...) {
		waitFor(t, within(ctx, 60*time.Second), "directories", func() bool { return n.dir.Len() >= 16 })
	}
	t.Logf("every directory held 16 nodes after %v", time.Since(t0).Round(time.Millisecond))

	data := make([]byte, 150_001)
	rand.Read(data)
	p, err := pub.Publish(ctx, "application/octet-stream", bytes.NewReader(data))
	if err != nil || p.Advertised == 0 {
		t.Fatalf("publish: %+v %v", p, err)
	}
	for _, r := range []*Node{r1, r2} {
		if _, err := r.Fetch(ctx, p.Name, nil); err != nil {
			t.Fatal(err)
		}
		rd, err := r.Open(ctx, p.Name)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rd)
		if !bytes.Equal(got, data) {
			t.Fatal("fetched bytes differ")
		}
	}
	name := p.Name
	role := func(id proto.NodeID) string {
		switch id {
		case bridge.ID():
			return "bridge"
		case pub.ID():
			return "publisher"
		case r1.ID():
			return "requester 1"
		case r2.ID():
			return "requester 2"
		}
		return "node " + id.Short()
	}

	// Who is who, from the users' own records.
	hops := func(u *Node) (first, middle, last map[proto.NodeID]bool) {
		first, middle, last = map[proto.NodeID]bool{}, map[proto.NodeID]bool{}, map[proto.NodeID]bool{}
		for _, path := range recs[u.ID()].ownPaths() {
			if len(path) < 3 {
				t.Fatalf("%s built a %d-hop circuit", role(u.ID()), len(path))
			}
			first[path[0]] = true
			for _, id := range path[1 : len(path)-1] {
				middle[id] = true
			}
			last[path[len(path)-1]] = true
		}
		return
	}
	dhtNodes := map[proto.NodeID]bool{}
	for id, r := range recs {
		if r.dhtAbout(name) {
			dhtNodes[id] = true
		}
	}
	pubFirst, _, _ := hops(pub)

	// Nobody but a user itself saw both its address and what it did.
	check := func(user *Node, what string, saw func(o *recorder) bool) {
		for id, o := range recs {
			if id == user.ID() {
				continue
			}
			if o.sawLink(user.ID()) && saw(o) {
				t.Errorf("%s saw both the %s's address and %s", role(id), role(user.ID()), what)
			}
		}
	}
	var table []string
	for i, r := range []*Node{r1, r2} {
		other := []*Node{r2, r1}[i]
		ids := recs[r.ID()].requestIDs(name)
		if len(ids) == 0 {
			t.Fatalf("%s sent no query for the content", role(r.ID()))
		}
		saw := func(o *recorder) bool { return o.sawRequest(ids) || o.dhtFrom(r.ID(), name) }
		check(r, "what it asked", saw)
		// The requester looked nothing up itself.
		for id, o := range recs {
			if o.dhtFrom(r.ID(), name) {
				t.Errorf("%s sent %s a DHT request for the content", role(r.ID()), role(id))
			}
		}
		first, middle, last := hops(r)
		kinds := []struct {
			kind string
			ids  map[proto.NodeID]bool
		}{
			{"first hop", first}, {"middle relay", middle}, {"ORDB", last}, {"DHT node", dhtNodes},
			{"publisher's first hop", pubFirst}, {"the other requester", map[proto.NodeID]bool{other.ID(): true}},
		}
		for _, k := range kinds {
			if len(k.ids) == 0 {
				t.Fatalf("%s: no %s to check", role(r.ID()), k.kind)
			}
			var addr, asked int
			for id := range k.ids {
				o := recs[id]
				a, w := o.sawLink(r.ID()), saw(o)
				if a {
					addr++
				}
				if w {
					asked++
				}
				if a && w {
					t.Errorf("%s %s saw the %s's address and what it asked", k.kind, role(id), role(r.ID()))
				}
			}
			table = append(table, fmt.Sprintf("%s: %d %s(s): %d saw its address, %d saw its request IDs", role(r.ID()), len(k.ids), k.kind, addr, asked))
		}
		// The records can tell: the ORDBs saw the requests, the first hops the address.
		if !anySaw(recs, last, saw) || !anySaw(recs, first, func(o *recorder) bool { return o.sawLink(r.ID()) }) {
			t.Fatalf("%s: the records show neither the ORDBs' queries nor the first hops' links", role(r.ID()))
		}
	}
	check(pub, "that the content is offered", func(o *recorder) bool { return o.sawPublication(name) || o.dhtFrom(pub.ID(), name) })
	_, _, pubORDBs := hops(pub)
	if !anySaw(recs, pubORDBs, func(o *recorder) bool { return o.sawPublication(name) }) {
		t.Fatal("no ORDB of the publisher recorded its DB_INFO")
	}
	if len(dhtNodes) == 0 {
		t.Fatal("no DHT node recorded a request for the content")
	}
	refused := int64(0)
	for _, o := range []*Node{pub, r1, r2} {
		refused += o.GuardRefused()
	}
	all := logs.String()
	if refused > 0 && !strings.Contains(all, "anonymous: dial refused") {
		t.Errorf("%d dials refused, none logged", refused)
	}
	t.Logf("the anonymous guard refused %d dials (logged once per node)", refused)
	// No log line, at any level, names the content.
	if strings.Contains(strings.ToLower(all), name.String()) {
		t.Error("a log line names the hash_name")
	}
	sort.Strings(table)
	t.Log("who learns what:\n" + strings.Join(table, "\n"))
}

func anySaw(recs map[proto.NodeID]*recorder, ids map[proto.NodeID]bool, saw func(*recorder) bool) bool {
	for id := range ids {
		if saw(recs[id]) {
			return true
		}
	}
	return false
}

// lockedBuffer is a bytes.Buffer many goroutines write.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
