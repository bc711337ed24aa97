package node_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"veil/cmd/veil/internal/node"
	"veil/cmd/veil/internal/procnet"
	"veil/kademlia"
	"veil/proto"
)

// buildVeil builds the veil binary into dir.
func buildVeil(t testing.TB, dir string) string {
	bin := filepath.Join(dir, "veil")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	if out, err := exec.Command("go", append(args, "veil/cmd/veil")...).CombinedOutput(); err != nil {
		t.Fatalf("building veil: %v\n%s", err, out)
	}
	return bin
}

// nodeProc starts a node process or fails t.
func nodeProc(t testing.TB, pn *procnet.Net, name, dir string, extra ...string) (*procnet.Proc, *node.Client) {
	t.Helper()
	p, c, err := pn.Node(name, dir, extra...)
	if err != nil {
		t.Fatal(err)
	}
	return p, c
}

// spawn starts a process or fails t.
func spawn(t testing.TB, pn *procnet.Net, name, dir string, args ...string) *procnet.Proc {
	t.Helper()
	p, err := pn.Spawn(name, dir, args...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// tableRoom is how many of nodes a full routing table of self holds: each
// bucket (by shared prefix length) keeps at most k.
func tableRoom(self proto.NodeID, nodes []proto.NodeID, k int) int {
	per := map[int]int{}
	for _, id := range nodes {
		if id != self {
			per[proto.CommonPrefixLen(self, id)]++
		}
	}
	room := 0
	for _, n := range per {
		room += min(n, k)
	}
	return room
}

func status(t testing.TB, c *node.Client) node.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

// checkRaces fails t when a process's log under root reports a data race
// (processes are built with -race when the test runs with it).
func checkRaces(t testing.TB, root string) {
	logs, _ := filepath.Glob(filepath.Join(root, "*.log"))
	for _, path := range logs {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		if i := bytes.Index(b, []byte("WARNING: DATA RACE")); i >= 0 {
			t.Errorf("%s reports a data race:\n%s", filepath.Base(path), b[i:min(len(b), i+6000)])
		}
	}
}

// testNet is a network of node processes that has settled.
type testNet struct {
	pn      *procnet.Net
	dirs    []string
	procs   []*procnet.Proc
	clients []*node.Client
	bridge  string         // node0's bridge line
	byID    map[string]int // node index by ID
}

// startNet starts nNodes node processes on 127.0.0.1, node0 the bridge
// the others join through, and waits (150 s at most per node) until
// every routing table holds every other node its buckets have room for,
// every directory knows every other node and every pool built its
// circuits.
func startNet(t testing.TB, nNodes int) *testNet {
	t.Helper()
	root := t.TempDir()
	pn := procnet.New(buildVeil(t, root), root)
	// Cleanups run last first: the logs are read once every process
	// has ended.
	t.Cleanup(func() { checkRaces(t, root) })
	t.Cleanup(pn.Close)
	tn := &testNet{pn: pn, dirs: make([]string, nNodes), procs: make([]*procnet.Proc, nNodes),
		clients: make([]*node.Client, nNodes), byID: map[string]int{}}
	for i := range tn.dirs {
		tn.dirs[i] = filepath.Join(pn.Root, fmt.Sprintf("node%d", i))
	}
	tn.procs[0], tn.clients[0] = nodeProc(t, pn, "node0", tn.dirs[0], "--set", "roles.bridge=true")
	tn.bridge = status(t, tn.clients[0]).BridgeLine
	if tn.bridge == "" {
		t.Fatal("the bridge has no bridge line")
	}
	for i := 1; i < nNodes; i++ {
		tn.procs[i], tn.clients[i] = nodeProc(t, pn, fmt.Sprintf("node%d", i), tn.dirs[i], "--bridge", tn.bridge)
	}
	for i, c := range tn.clients {
		tn.byID[status(t, c).ID] = i
	}
	ids := make([]proto.NodeID, 0, nNodes)
	for id := range tn.byID {
		nid, err := proto.ParseNodeID(id)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, nid)
	}
	for i, c := range tn.clients {
		self, _ := proto.ParseNodeID(status(t, c).ID)
		full := tableRoom(self, ids, kademlia.DefaultConfig().K)
		// Once a directory holds 8 nodes a node looks around only every
		// 30 s, asking the 8 closest to itself or to a random ID: one
		// that joined late may need several of those to meet the last
		// node, and on a loaded machine 60 s gave it two (TestChaos failed
		// so: table full, directory 18 of 19).
		deadline := time.Now().Add(150 * time.Second)
		for {
			st := status(t, c)
			if st.DHTSize >= full && st.Directory >= nNodes-1 && len(st.Circuits) >= 2 {
				t.Logf("node%d: table %d (full), directory %d, circuits %d", i, st.DHTSize, st.Directory, len(st.Circuits))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node%d: table %d of %d, directory %d, circuits %d (%s)", i, st.DHTSize, full, st.Directory, len(st.Circuits), st.PoolError)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return tn
}

// TestNodeProcesses runs veil as separate processes on 127.0.0.1: one
// bridge and relays/ORDBs joining through it; a content put at one node
// and got at another through circuits, across a relay's SIGTERM in the
// middle of the get; a restarted node keeps its ID; a getter killed with
// SIGKILL resumes from what it stored.
func TestNodeProcesses(t *testing.T) {
	nNodes := 12
	if testing.Short() {
		nNodes = 6
	}
	tn := startNet(t, nNodes)
	pn, dirs, procs, clients, bridge, byID := tn.pn, tn.dirs, tn.procs, tn.clients, tn.bridge, tn.byID

	// SIGHUP reloads the configuration; the node keeps running.
	if err := procs[0].Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(pn.Log("node0"), "configuration reloaded"); {
		if time.Now().After(deadline) {
			t.Fatalf("no reload on SIGHUP:\n%s", pn.Log("node0"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	status(t, clients[0])

	// Put at node 1.
	data := make([]byte, 40<<20)
	rand.Read(data)
	src := filepath.Join(pn.Root, "content")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	put := spawn(t, pn, "put", "", "put", "--data-dir", dirs[1], src)
	if err := put.Wait(60 * time.Second); err != nil {
		t.Fatalf("put: %v\n%s", err, pn.Log("put"))
	}
	hash := regexp.MustCompile(`(?m)^[0-9a-f]{40}$`).FindString(pn.Log("put"))
	if hash == "" {
		t.Fatalf("put printed no hash_name:\n%s", pn.Log("put"))
	}

	// The publisher advertised through its circuits to its own ORDBs.
	pubSt := status(t, clients[1])
	if pubSt.ORDB == nil || pubSt.ORDB.Peer.Adverts == 0 || len(pubSt.ORDB.ORDBs) == 0 {
		t.Fatalf("the publisher advertised nothing: %+v", pubSt.ORDB)
	}
	pubORDBs := map[string]bool{}
	for _, id := range pubSt.ORDB.ORDBs {
		pubORDBs[id] = true
	}
	// The getter: the last node that is not one of the publisher's ORDBs
	// (in a network of fewer than 8 nodes every node is one).
	getter := nNodes - 1
	for i := nNodes - 1; i >= 2; i-- {
		if !pubORDBs[status(t, clients[i]).ID] {
			getter = i
			break
		}
	}
	getterID := status(t, clients[getter]).ID
	getterIsPubORDB := pubORDBs[getterID]

	// Get at the getter; SIGTERM a relay of its circuit mid-way.
	out := filepath.Join(pn.Root, "got")
	get := spawn(t, pn, "get", "", "get", "--data-dir", dirs[getter], "-o", out, hash)
	victim := -1
	for deadline := time.Now().Add(60 * time.Second); victim < 0; {
		for _, tr := range status(t, clients[getter]).Transfers {
			if tr.HashName != hash || len(tr.Circuit) < 2 || tr.Held == 0 || tr.Held*2 > tr.Total {
				continue
			}
			// A relay before the last hop if one can be stopped, else the
			// ORDB at the end (the circuit breaks either way; in a small
			// network both relays may be the bridge and the publisher).
			for _, id := range tr.Circuit {
				if i, ok := byID[id]; ok && i != 0 && i != 1 && i != getter { // neither the bridge nor the publisher
					victim = i
					break
				}
			}
		}
		select {
		case <-get.Done():
			t.Fatalf("get ended before a relay could be stopped mid-way: %v\n%s", get.Err(), pn.Log("get"))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no transfer in progress through a relay we can stop")
		}
		time.Sleep(10 * time.Millisecond)
	}
	victimID := status(t, clients[victim]).ID
	if !procs[victim].Stop(syscall.SIGTERM, 20*time.Second) {
		t.Fatalf("node%d did not stop on SIGTERM", victim)
	}
	if err := get.Wait(120 * time.Second); err != nil {
		t.Fatalf("get after stopping relay node%d: %v\n%s", victim, err, pn.Log("get"))
	}
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes (%v), want the %d put", len(got), err, len(data))
	}
	if !strings.Contains(pn.Log("get"), "circuit lost; resuming through a new circuit") {
		t.Fatalf("the get did not change circuits after relay node%d stopped:\n%s", victim, pn.Log("get"))
	}
	t.Logf("get completed across the SIGTERM of relay node%d:\n%s", victim, pn.Log("get"))

	// Nobody learns both who asked and what. The getter's node looked
	// nothing up: its fetch has no lookup of its own, and its ORDB service
	// (the only other caller of FIND_VALUE) did none. No provider record
	// names the publisher (its ORDBs stored records naming themselves),
	// nor the getter (unless it is one of the publisher's ORDBs).
	// The publisher's ORDBs change as nodes stop (the stopped relay may
	// have been one): count every ORDB it advertised to.
	for _, id := range status(t, clients[1]).ORDB.ORDBsEver {
		pubORDBs[id] = true
	}
	getterIsPubORDB = pubORDBs[getterID]
	// (In a network of fewer than 8 nodes the getter is one of the
	// publisher's ORDBs too, and as such may look up on behalf of the
	// other ORDBs that relay its own fetch: only logged then.)
	if gs := status(t, clients[getter]).ORDB; gs == nil {
		t.Fatalf("the getter node%d has no ORDB status", getter)
	} else if gs.Relay.Lookups != 0 && !getterIsPubORDB {
		t.Fatalf("the getter node%d sent FIND_VALUEs: %+v", getter, gs.Relay)
	} else if gs.Relay.Lookups != 0 {
		t.Logf("the getter node%d, one of the publisher's ORDBs, looked up %d times as an ORDB", getter, gs.Relay.Lookups)
	}
	if ps := status(t, clients[1]).ORDB; ps.Relay.Stores != 0 {
		t.Fatalf("the publisher's ORDB service stored provider records: %+v", ps.Relay)
	}
	pctx, pcancel := context.WithTimeout(context.Background(), 30*time.Second)
	provs, err := clients[0].Providers(pctx, hash)
	pcancel()
	if err != nil || len(provs.ORDBs) == 0 {
		t.Fatalf("no provider record in the DHT: %+v %v", provs, err)
	}
	fromPubORDB := false
	for _, id := range provs.ORDBs {
		if id == status(t, clients[1]).ID || (id == getterID && !getterIsPubORDB) {
			t.Fatalf("a provider record names node%d", byID[id])
		}
		fromPubORDB = fromPubORDB || pubORDBs[id]
	}
	if !fromPubORDB {
		t.Fatalf("no provider record names one of the publisher's ORDBs: %v", provs.ORDBs)
	}
	t.Logf("provider records name %d ORDBs; the getter node%d (one of the publisher's ORDBs: %v) fetched with no lookup of its own", len(provs.ORDBs), getter, getterIsPubORDB)

	// The stopped relay comes back with its ID.
	procs[victim], clients[victim] = nodeProc(t, pn, fmt.Sprintf("node%d-again", victim), dirs[victim], "--bridge", bridge)
	if id := status(t, clients[victim]).ID; id != victimID {
		t.Fatalf("restarted node%d has ID %s, had %s", victim, id, victimID)
	}

	// A getting node stopped with SIGTERM mid-get exits promptly and
	// cleanly, keeping what it stored: once restarted, a new get resumes.
	g := nNodes - 1 // neither the bridge, the publisher, the first getter nor the stopped relay
	for g == victim || g == getter {
		g--
	}
	out3 := filepath.Join(pn.Root, "got3")
	get3 := spawn(t, pn, "get3", "", "get", "--data-dir", dirs[g], "-o", out3, hash)
	for deadline := time.Now().Add(60 * time.Second); ; {
		sts := status(t, clients[g]).Transfers
		if len(sts) == 1 && sts[0].Held > 0 && sts[0].Held*2 < sts[0].Total {
			break
		}
		select {
		case <-get3.Done():
			t.Fatalf("get ended before its node could be stopped: %v\n%s", get3.Err(), pn.Log("get3"))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no transfer in progress at the getting node")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !procs[g].Stop(syscall.SIGTERM, 20*time.Second) || procs[g].Err() != nil {
		t.Fatalf("node%d did not stop cleanly on SIGTERM mid-get: %v\n%s", g, procs[g].Err(), pn.Log(fmt.Sprintf("node%d", g)))
	}
	if err := get3.Wait(20 * time.Second); err == nil {
		t.Fatalf("get reported success though its node stopped:\n%s", pn.Log("get3"))
	}
	procs[g], clients[g] = nodeProc(t, pn, fmt.Sprintf("node%d-again", g), dirs[g], "--bridge", bridge)
	get4 := spawn(t, pn, "get4", "", "get", "--data-dir", dirs[g], "-o", out3, hash)
	if err := get4.Wait(120 * time.Second); err != nil {
		t.Fatalf("get after the node's restart: %v\n%s", err, pn.Log("get4"))
	}
	if m := regexp.MustCompile(`resuming: (\d+) of`).FindStringSubmatch(pn.Log("get4")); m == nil || m[1] == "0" {
		t.Fatalf("the restarted node did not resume:\n%s", pn.Log("get4"))
	}
	if got, err := os.ReadFile(out3); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("resumed get gave %d bytes (%v), want the %d put", len(got), err, len(data))
	}

	// An ephemeral getter (no node on its data directory) killed with
	// SIGKILL mid-way resumes without fetching again what it stored.
	edir := filepath.Join(pn.Root, "ephemeral")
	eout := filepath.Join(pn.Root, "got2")
	eargs := []string{"get", "--data-dir", edir, "--set", "allow_private=true", "--bridge", bridge, "-o", eout, hash}
	g1 := spawn(t, pn, "eget1", edir, eargs...)
	for deadline := time.Now().Add(60 * time.Second); !regexp.MustCompile(`get: +[2-7][0-9]%`).MatchString(pn.Log("eget1")); {
		select {
		case <-g1.Done():
			t.Fatalf("first get ended before it could be killed: %v\n%s", g1.Err(), pn.Log("eget1"))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("first get made no progress:\n%s", pn.Log("eget1"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	g1.Stop(syscall.SIGKILL, 10*time.Second)
	g2 := spawn(t, pn, "eget2", edir, eargs...)
	if err := g2.Wait(120 * time.Second); err != nil {
		t.Fatalf("second get: %v\n%s", err, pn.Log("eget2"))
	}
	m := regexp.MustCompile(`resuming: (\d+) of (\d+) chunks`).FindStringSubmatch(pn.Log("eget2"))
	if m == nil {
		t.Fatalf("second get did not resume:\n%s", pn.Log("eget2"))
	}
	if held, _ := strconv.Atoi(m[1]); held == 0 {
		t.Fatalf("second get resumed from nothing:\n%s", pn.Log("eget2"))
	}
	if got, err := os.ReadFile(eout); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("resumed get gave %d bytes (%v), want the %d put", len(got), err, len(data))
	}
	t.Logf("killed getter resumed: %s", m[0])

	// A content nobody announced: exit code 3, said plainly, once.
	nf := spawn(t, pn, "notfound", "", "get", "--data-dir", dirs[1], "-o", filepath.Join(pn.Root, "nothing"), strings.Repeat("0f", 20))
	var ee *exec.ExitError
	if err := nf.Wait(60 * time.Second); !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("get of an unknown hash_name: %v\n%s", err, pn.Log("notfound"))
	}
	if l := pn.Log("notfound"); strings.Count(l, "no provider found") != 1 {
		t.Fatalf("get of an unknown hash_name says:\n%s", l)
	}

	// Every node stops cleanly on SIGTERM.
	for i, p := range procs {
		if !p.Stop(syscall.SIGTERM, 20*time.Second) {
			t.Errorf("node%d did not stop on SIGTERM", i)
		}
	}
}
