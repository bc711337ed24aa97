package node

import (
	"bytes"
	"context"
	"crypto/rand"
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

	"veil/kademlia"
	"veil/proto"
)

// procNet is a network of `veil node` processes on 127.0.0.1.
type procNet struct {
	t     *testing.T
	bin   string
	root  string
	env   []string
	procs []*proc
}

type proc struct {
	name string
	dir  string // data directory
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error
}

func newProcNet(t *testing.T) *procNet {
	root := t.TempDir()
	bin := filepath.Join(root, "veil")
	build := exec.Command("go", "build", "-o", bin, "veil/cmd/veil")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building veil: %v\n%s", err, out)
	}
	env := []string{"XDG_CONFIG_HOME=" + filepath.Join(root, "config"), "XDG_DATA_HOME=" + filepath.Join(root, "xdgdata")}
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !strings.HasPrefix(k, "VEIL_") && !strings.HasPrefix(k, "XDG_") {
			env = append(env, kv)
		}
	}
	pn := &procNet{t: t, bin: bin, root: root, env: env}
	t.Cleanup(func() {
		for _, p := range pn.procs {
			p.stop(syscall.SIGKILL, 10*time.Second)
		}
	})
	return pn
}

// common are the flags of every process: loopback only, free ports, few circuits.
var common = []string{"--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--set", "allow_private=true",
	"--set", "tunnels.min_circuits=2", "--set", "tunnels.max_circuits=2"}

// spawn starts the veil binary with args, its stderr going to name.log.
func (pn *procNet) spawn(name, dir string, args ...string) *proc {
	pn.t.Helper()
	logf, err := os.OpenFile(filepath.Join(pn.root, name+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		pn.t.Fatal(err)
	}
	cmd := exec.Command(pn.bin, args...)
	cmd.Env, cmd.Stderr = pn.env, logf
	cmd.Stdout = logf
	if err := cmd.Start(); err != nil {
		pn.t.Fatal(err)
	}
	p := &proc{name: name, dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	pn.procs = append(pn.procs, p)
	return p
}

func (pn *procNet) log(name string) string {
	b, _ := os.ReadFile(filepath.Join(pn.root, name+".log"))
	return string(b)
}

// node starts `veil node` on dir and waits for its API.
func (pn *procNet) node(name, dir string, extra ...string) (*proc, *Client) {
	pn.t.Helper()
	p := pn.spawn(name, dir, append(append([]string{"node", "--data-dir", dir}, common...), extra...)...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := Dial(ctx, dir, "")
		cancel()
		if err == nil {
			return p, c
		}
		select {
		case <-p.done:
			pn.t.Fatalf("%s exited: %v\n%s", name, p.err, pn.log(name))
		default:
		}
		if time.Now().After(deadline) {
			pn.t.Fatalf("%s: API not up: %v\n%s", name, err, pn.log(name))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop signals p and waits (bounded) for it to exit.
func (p *proc) stop(sig syscall.Signal, wait time.Duration) bool {
	select {
	case <-p.done:
		return true
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return true
	case <-time.After(wait):
		_ = p.cmd.Process.Kill()
		<-p.done
		return false
	}
}

// wait waits (bounded) for p to exit by itself.
func (p *proc) wait(d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not finish in %v", p.name, d)
	}
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

func status(t *testing.T, c *Client) Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
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
	pn := newProcNet(t)
	dirs := make([]string, nNodes)
	for i := range dirs {
		dirs[i] = filepath.Join(pn.root, fmt.Sprintf("node%d", i))
	}
	procs := make([]*proc, nNodes)
	clients := make([]*Client, nNodes)
	procs[0], clients[0] = pn.node("node0", dirs[0], "--set", "roles.bridge=true")
	bridge := status(t, clients[0]).BridgeLine
	if bridge == "" {
		t.Fatal("the bridge has no bridge line")
	}
	for i := 1; i < nNodes; i++ {
		procs[i], clients[i] = pn.node(fmt.Sprintf("node%d", i), dirs[i], "--bridge", bridge)
	}
	byID := map[string]int{}
	for i, c := range clients {
		byID[status(t, c).ID] = i
	}

	// Every routing table fills (holds every other node its buckets have
	// room for), every directory knows every other node, every pool
	// builds its circuits.
	ids := make([]proto.NodeID, 0, nNodes)
	for id := range byID {
		nid, err := proto.ParseNodeID(id)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, nid)
	}
	for i, c := range clients {
		self, _ := proto.ParseNodeID(status(t, c).ID)
		full := tableRoom(self, ids, kademlia.DefaultConfig().K)
		deadline := time.Now().Add(60 * time.Second)
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

	// Put at node 1.
	data := make([]byte, 40<<20)
	rand.Read(data)
	src := filepath.Join(pn.root, "content")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	put := pn.spawn("put", "", "put", "--data-dir", dirs[1], src)
	if err := put.wait(60 * time.Second); err != nil {
		t.Fatalf("put: %v\n%s", err, pn.log("put"))
	}
	hash := regexp.MustCompile(`(?m)^[0-9a-f]{40}$`).FindString(pn.log("put"))
	if hash == "" {
		t.Fatalf("put printed no hash_name:\n%s", pn.log("put"))
	}

	// Get at the last node; SIGTERM a relay of its circuit mid-way.
	getter := nNodes - 1
	out := filepath.Join(pn.root, "got")
	get := pn.spawn("get", "", "get", "--data-dir", dirs[getter], "-o", out, hash)
	victim := -1
	for deadline := time.Now().Add(60 * time.Second); victim < 0; {
		for _, tr := range status(t, clients[getter]).Transfers {
			if tr.HashName != hash || len(tr.Circuit) < 2 || tr.Held == 0 || tr.Held*4 > tr.Total*3 {
				continue
			}
			for _, id := range tr.Circuit[:len(tr.Circuit)-1] {
				if i, ok := byID[id]; ok && i != 0 && i != 1 { // neither the bridge nor the publisher
					victim = i
					break
				}
			}
		}
		select {
		case <-get.done:
			t.Fatalf("get ended before a relay could be stopped mid-way: %v\n%s", get.err, pn.log("get"))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no transfer in progress through a relay we can stop")
		}
		time.Sleep(10 * time.Millisecond)
	}
	victimID := status(t, clients[victim]).ID
	if !procs[victim].stop(syscall.SIGTERM, 20*time.Second) {
		t.Fatalf("node%d did not stop on SIGTERM", victim)
	}
	if err := get.wait(120 * time.Second); err != nil {
		t.Fatalf("get after stopping relay node%d: %v\n%s", victim, err, pn.log("get"))
	}
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes (%v), want the %d put", len(got), err, len(data))
	}
	if !strings.Contains(pn.log("get"), "circuit lost; resuming through a new circuit") {
		t.Fatalf("the get did not change circuits after relay node%d stopped:\n%s", victim, pn.log("get"))
	}
	t.Logf("get completed across the SIGTERM of relay node%d:\n%s", victim, pn.log("get"))

	// The stopped relay comes back with its ID.
	_, c := pn.node(fmt.Sprintf("node%d-again", victim), dirs[victim], "--bridge", bridge)
	if id := status(t, c).ID; id != victimID {
		t.Fatalf("restarted node%d has ID %s, had %s", victim, id, victimID)
	}

	// An ephemeral getter (no node on its data directory) killed with
	// SIGKILL mid-way resumes without fetching again what it stored.
	edir := filepath.Join(pn.root, "ephemeral")
	eout := filepath.Join(pn.root, "got2")
	eargs := []string{"get", "--data-dir", edir, "--set", "allow_private=true", "--bridge", bridge, "-o", eout, hash}
	g1 := pn.spawn("eget1", edir, eargs...)
	for deadline := time.Now().Add(60 * time.Second); !regexp.MustCompile(`get: +[2-8]0%`).MatchString(pn.log("eget1")); {
		select {
		case <-g1.done:
			t.Fatalf("first get ended before it could be killed: %v\n%s", g1.err, pn.log("eget1"))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("first get made no progress:\n%s", pn.log("eget1"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	g1.stop(syscall.SIGKILL, 10*time.Second)
	g2 := pn.spawn("eget2", edir, eargs...)
	if err := g2.wait(120 * time.Second); err != nil {
		t.Fatalf("second get: %v\n%s", err, pn.log("eget2"))
	}
	m := regexp.MustCompile(`resuming: (\d+) of (\d+) chunks`).FindStringSubmatch(pn.log("eget2"))
	if m == nil {
		t.Fatalf("second get did not resume:\n%s", pn.log("eget2"))
	}
	if held, _ := strconv.Atoi(m[1]); held == 0 {
		t.Fatalf("second get resumed from nothing:\n%s", pn.log("eget2"))
	}
	if got, err := os.ReadFile(eout); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("resumed get gave %d bytes (%v), want the %d put", len(got), err, len(data))
	}
	t.Logf("killed getter resumed: %s", m[0])

	// Every node stops cleanly on SIGTERM.
	for i, p := range procs {
		if i != victim && !p.stop(syscall.SIGTERM, 20*time.Second) {
			t.Errorf("node%d did not stop on SIGTERM", i)
		}
	}
}
