package node_test

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"veil/circuits"
	"veil/circuits/link"
	"veil/cmd/veil/internal/node"
	"veil/cmd/veil/internal/procnet"
	"veil/proto"
)

// The benchmarks of `veil node` as separate processes on 127.0.0.1. They
// start a 12-node network each (some seconds), so run them one at a time
// with -benchtime 1x; -short skips them.

// benchNodes is the size of the benchmarks' network.
const benchNodes = 12

// BenchmarkNodeIdle measures one idle node of a settled network: its
// resident set (rss-MB, and rss-max-MB over every node), then the memory
// 240 idle circuits relayed through it add once the links they use are
// open (bytes/circuit: live heap plus goroutine stacks, after a garbage
// collection; rss-bytes/circuit: the resident set's growth). The node's
// own work (its pool, its ORDB circuits, the DHT) moves its live heap by
// tens of KB between two readings, so each side is the median of three
// readings, over as many circuits as four origin links to the node carry
// (MaxJoinedPerLink).
func BenchmarkNodeIdle(b *testing.B) {
	if testing.Short() {
		b.Skip("starts a network of 12 node processes")
	}
	const nSwitches, nCircuits = 4, 240
	tn := startNet(b, benchNodes)
	x := benchNodes / 2 // neither the bridge nor the last node
	cx := tn.clients[x]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// The resident sets as they are, before anything forces a collection.
	rss := node.ProcessRSS(tn.procs[x].PID())
	var maxRSS uint64
	for _, p := range tn.procs {
		maxRSS = max(maxRSS, node.ProcessRSS(p.PID()))
	}
	if rss == 0 {
		b.Skip("no /proc/PID/status VmRSS here")
	}

	joined0 := status(b, cx).Joined

	// Build the circuits from this process: [x, y] paths, y going round
	// the other nodes so that no link carries more than a switch allows
	// (MaxJoinedPerLink), through two origin switches for the same reason.
	descs := fetchDescriptors(b, ctx, tn)
	dx := descs[x]
	var others []proto.NodeDescriptor
	for i, d := range descs {
		if i != x {
			others = append(others, d)
		}
	}
	var built []*circuits.Circuit
	var switches []*circuits.Switch
	for range nSwitches {
		sw, links := originSwitch(b)
		switches = append(switches, sw)
		defer links.Close()
		defer sw.Close()
	}
	// Open every link the circuits will use (the origins' links to x, x's
	// to the others) before the first measure, with a circuit on each path
	// closed at once: a link costs tens of KB of TLS state and buffers,
	// which is the link's, not the circuits'.
	for _, sw := range switches {
		for _, d := range others {
			c, err := sw.Build(ctx, []proto.NodeDescriptor{dx, d})
			if err != nil {
				b.Fatalf("warming the links: %v", err)
			}
			c.Close()
		}
	}
	for deadline := time.Now().Add(30 * time.Second); status(b, cx).Joined > joined0; {
		if time.Now().After(deadline) {
			b.Fatalf("node%d still carries %d circuits after the warm-up, want %d", x, status(b, cx).Joined, joined0)
		}
		time.Sleep(50 * time.Millisecond)
	}
	m0 := medianMemory(b, ctx, cx)
	profile(b, cx, "before")

	for i := range nCircuits {
		c, err := switches[i%nSwitches].Build(ctx, []proto.NodeDescriptor{dx, others[i%len(others)]})
		if err != nil {
			b.Fatalf("circuit %d: %v", i, err)
		}
		built = append(built, c)
	}
	for deadline := time.Now().Add(30 * time.Second); status(b, cx).Joined < joined0+nCircuits; {
		if time.Now().After(deadline) {
			b.Fatalf("node%d carries %d circuits, want %d more than %d", x, status(b, cx).Joined, nCircuits, joined0)
		}
		time.Sleep(50 * time.Millisecond)
	}
	m1 := medianMemory(b, ctx, cx)
	profile(b, cx, "after")
	for _, c := range built {
		c.Close()
	}

	perCircuit := (float64(m1.HeapAlloc+m1.StackInuse) - float64(m0.HeapAlloc+m0.StackInuse)) / nCircuits
	rssPer := (float64(m1.RSS) - float64(m0.RSS)) / nCircuits
	b.Logf("node%d: RSS %.1f MB idle; heap %d -> %d, stacks %d -> %d, goroutines %d -> %d, RSS %d -> %d with %d circuits more",
		x, float64(rss)/(1<<20), m0.HeapAlloc, m1.HeapAlloc, m0.StackInuse, m1.StackInuse, m0.Goroutines, m1.Goroutines, m0.RSS, m1.RSS, nCircuits)
	b.ReportMetric(float64(rss)/(1<<20), "rss-MB")
	b.ReportMetric(float64(maxRSS)/(1<<20), "rss-max-MB")
	b.ReportMetric(perCircuit, "bytes/circuit")
	b.ReportMetric(rssPer, "rss-bytes/circuit")
	b.ReportMetric((float64(m1.HeapAlloc)-float64(m0.HeapAlloc))/nCircuits, "heap-bytes/circuit")
	b.ReportMetric((float64(m1.StackInuse)-float64(m0.StackInuse))/nCircuits, "stack-bytes/circuit")
	b.ReportMetric(float64(m1.Goroutines-m0.Goroutines)/nCircuits, "goroutines/circuit")
}

// medianMemory reads the node's memory three times (each after a garbage
// collection) and returns the reading whose heap plus stacks is the median.
func medianMemory(b *testing.B, ctx context.Context, c *node.Client) node.Memory {
	var ms []node.Memory
	for range 3 {
		m, err := c.Memory(ctx)
		if err != nil {
			b.Fatal(err)
		}
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(x, y node.Memory) int {
		return cmp.Compare(x.HeapAlloc+x.StackInuse, y.HeapAlloc+y.StackInuse)
	})
	return ms[1]
}

// profile writes the node's heap profile to $VEIL_BENCH_PROFILES/heap-NAME.pb.gz
// when that variable names a directory.
func profile(b *testing.B, c *node.Client, name string) {
	dir := os.Getenv("VEIL_BENCH_PROFILES")
	if dir == "" {
		return
	}
	var buf bytes.Buffer
	if err := c.HeapProfile(context.Background(), &buf); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "heap-"+name+".pb.gz"), buf.Bytes(), 0o600); err != nil {
		b.Fatal(err)
	}
}

// originSwitch is a client's switch in this process, on links of a fresh
// identity.
func originSwitch(b *testing.B) (*circuits.Switch, *link.Links) {
	id, err := circuits.NewEphemeralIdentity()
	if err != nil {
		b.Fatal(err)
	}
	links := link.NewLinks(id.Key, link.DefaultConfig())
	sw, err := circuits.NewSwitch(id, links, circuits.DefaultSwitchConfig())
	if err != nil {
		b.Fatal(err)
	}
	links.SetHandlers(link.Handlers{Cell: sw.HandleCell, Closed: sw.HandleClosed})
	return sw, links
}

// fetchDescriptors asks every node of tn for its descriptor over a link,
// as nodes learn each other's (DESCRIPTOR_REQUEST / DESCRIPTOR), and
// returns them by node index.
func fetchDescriptors(b *testing.B, ctx context.Context, tn *testNet) []proto.NodeDescriptor {
	id, err := circuits.NewEphemeralIdentity()
	if err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	got := map[proto.NodeID]proto.NodeDescriptor{}
	links := link.NewLinks(id.Key, link.DefaultConfig())
	defer links.Close()
	links.SetHandlers(link.Handlers{Var: func(l link.Conn, v proto.VarCell) {
		m, err := proto.ParseDHTMessage(v.Payload)
		if err != nil || m.Type != proto.DHTDescriptor || m.Descriptor.ID != l.Peer() || m.Descriptor.Verify(time.Now()) != nil {
			return
		}
		d, err := proto.ParseNodeDescriptor(m.Descriptor.Append(nil)) // a copy: v.Payload is the link's
		if err != nil {
			return
		}
		mu.Lock()
		got[d.ID] = d
		mu.Unlock()
	}})
	ids := make([]proto.NodeID, len(tn.clients))
	req := proto.DHTMessage{Type: proto.DHTDescriptorRequest, TxID: rand.Uint64()}
	for i, c := range tn.clients {
		st := status(b, c)
		if ids[i], err = proto.ParseNodeID(st.ID); err != nil {
			b.Fatal(err)
		}
		l, err := links.Get(ctx, ids[i], st.Addr)
		if err != nil {
			b.Fatalf("link to node%d: %v", i, err)
		}
		if err := l.SendVar(proto.VarCell{Command: proto.CmdDHT, Payload: req.Append(nil)}); err != nil {
			b.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == len(ids) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d descriptors of %d", n, len(ids))
		}
		time.Sleep(20 * time.Millisecond)
	}
	out := make([]proto.NodeDescriptor, len(ids))
	for i, id := range ids {
		out[i] = got[id]
	}
	return out
}

// BenchmarkNodeGet measures `veil get` of 100 MB between node processes:
// put at node1, got at another node through its circuits, the output file
// written and checked. Only the get is timed.
func BenchmarkNodeGet(b *testing.B) {
	if testing.Short() {
		b.Skip("starts a network of 12 node processes")
	}
	const size = 100 << 20
	tn := startNet(b, benchNodes)
	data := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{1})
	b.SetBytes(size)
	var fetchTotal, copyTotal time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		_, _ = rng.Read(data)
		src := filepath.Join(tn.pn.Root, fmt.Sprintf("content%d", i))
		if err := os.WriteFile(src, data, 0o600); err != nil {
			b.Fatal(err)
		}
		put := spawn(b, tn.pn, fmt.Sprintf("put%d", i), "", "put", "--data-dir", tn.dirs[1], src)
		if err := put.Wait(5 * time.Minute); err != nil {
			b.Fatalf("put: %v\n%s", err, tn.pn.Log(fmt.Sprintf("put%d", i)))
		}
		hash := regexp.MustCompile(`(?m)^[0-9a-f]{40}$`).FindString(tn.pn.Log(fmt.Sprintf("put%d", i)))
		if hash == "" {
			b.Fatalf("put printed no hash_name:\n%s", tn.pn.Log(fmt.Sprintf("put%d", i)))
		}
		// A different getter each round: none holds the content yet.
		g := benchNodes - 1 - i%(benchNodes-2)
		out := filepath.Join(tn.pn.Root, fmt.Sprintf("got%d", i))
		b.StartTimer()
		start := time.Now()
		get := spawn(b, tn.pn, fmt.Sprintf("get%d", i), "", "get", "--data-dir", tn.dirs[g], "-o", out, hash)
		fetched := watchTransfer(tn.clients[g], hash, get.Done())
		profiled := cpuProfiles(b, tn, 4)
		if err := get.Wait(10 * time.Minute); err != nil {
			b.Fatalf("get at node%d: %v\n%s", g, err, tn.pn.Log(fmt.Sprintf("get%d", i)))
		}
		b.StopTimer()
		took := time.Since(start)
		profiled.Wait()
		fetch := <-fetched
		fetchTotal += fetch
		b.Logf("round %d: get %v, of which the node's fetch %v (the rest: the process, the copy out of the cache into the file)", i, took, fetch)
		if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, data) {
			b.Fatalf("got %d bytes (%v), want the %d put", len(got), err, len(data))
		}
		// The same get again: the node holds the content, so this is the
		// process and the copy out alone.
		start = time.Now()
		again := spawn(b, tn.pn, fmt.Sprintf("again%d", i), "", "get", "--data-dir", tn.dirs[g], "-o", out, hash)
		if err := again.Wait(5 * time.Minute); err != nil {
			b.Fatalf("second get at node%d: %v\n%s", g, err, tn.pn.Log(fmt.Sprintf("again%d", i)))
		}
		copyTotal += time.Since(start)
		_ = os.Remove(out)
		_ = os.Remove(src)
	}
	b.ReportMetric(float64(size)*float64(b.N)/fetchTotal.Seconds()/1e6, "fetch-MB/s")
	b.ReportMetric(float64(size)*float64(b.N)/copyTotal.Seconds()/1e6, "held-get-MB/s")
}

// cpuProfiles profiles every node for secs seconds into
// $VEIL_BENCH_PROFILES/cpu-nodeI.pb.gz when that variable names a
// directory. Wait for the returned group before the network stops.
func cpuProfiles(b *testing.B, tn *testNet, secs int) *sync.WaitGroup {
	var wg sync.WaitGroup
	dir := os.Getenv("VEIL_BENCH_PROFILES")
	if dir == "" {
		return &wg
	}
	for i, c := range tn.clients {
		wg.Go(func() {
			var buf bytes.Buffer
			if err := c.CPUProfile(context.Background(), secs, &buf); err != nil {
				b.Errorf("profiling node%d: %v", i, err)
				return
			}
			_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("cpu-node%d.pb.gz", i)), buf.Bytes(), 0o600)
		})
	}
	return &wg
}

// watchTransfer polls the node's transfers until done is closed and
// sends how long after its start the transfer of hash was last seen: when
// the node's fetch ended, to the polling interval.
func watchTransfer(c *node.Client, hash string, done <-chan struct{}) <-chan time.Duration {
	out := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		var last time.Duration
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				out <- last
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := c.Status(ctx)
			cancel()
			if err != nil {
				continue
			}
			for _, tr := range st.Transfers {
				if tr.HashName == hash {
					last = time.Since(start)
				}
			}
		}
	}()
	return out
}

// BenchmarkSOCKSExitProcesses is BenchmarkSOCKSExit with every node a
// `veil node` process on 127.0.0.1, as in the private Tor network Tor's
// figures come from: a bridge, relays, an exit allowed to reach the
// origin server (in this process) and nothing else, and a client whose
// SOCKS port curl uses. Each node has its own scheduler, as on its own
// machine, and pays what crossing processes costs, as each Tor relay
// does; the two cores are shared by all. MB/cpu-s counts the CPU time of
// every node process.
func BenchmarkSOCKSExitProcesses(b *testing.B) {
	if testing.Short() {
		b.Skip("starts a network of node processes")
	}
	node.NeedCurl(b)
	const nNodes = 8 // as BenchmarkSOCKSExit's network
	_, port := node.StartOrigin(b, node.SOCKSBenchSize)
	root := b.TempDir()
	pn := procnet.New(buildVeil(b, root), root)
	b.Cleanup(func() { checkRaces(b, root) })
	b.Cleanup(pn.Close)
	socks := freeAddr(b)
	var procs []*procnet.Proc
	var clients []*node.Client
	bridge := ""
	for i := range nNodes {
		var args []string
		switch i {
		case 0:
			args = []string{"--set", "roles.bridge=true"}
		case 1: // the exit
			args = []string{"--bridge", bridge, "--set", "roles.exit=true", "--set", "exit.allow_private=true",
				"--set", "exit.policy=accept 127.0.0.1:" + port + ",reject *:*"}
		case nNodes - 1: // the client
			args = []string{"--bridge", bridge, "--set", "socks=" + socks}
		default:
			args = []string{"--bridge", bridge}
		}
		p, c := nodeProc(b, pn, fmt.Sprintf("node%d", i), filepath.Join(pn.Root, fmt.Sprintf("node%d", i)), args...)
		procs, clients = append(procs, p), append(clients, c)
		if i == 0 {
			if bridge = status(b, c).BridgeLine; bridge == "" {
				b.Fatal("the bridge has no bridge line")
			}
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for i, c := range clients {
		for st := status(b, c); st.Directory < nNodes-1; st = status(b, c) {
			if time.Now().After(deadline) {
				b.Fatalf("node%d: directory %d of %d", i, st.Directory, nNodes-1)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	cpu := func() time.Duration {
		var sum time.Duration
		for _, p := range procs {
			sum += procCPU(p.PID())
		}
		return sum
	}
	node.MeasureSOCKSExit(b, socks, "http://127.0.0.1:"+port+"/file", cpu)
}

// freeAddr is a 127.0.0.1 address with a port nothing listened on a
// moment ago (a node given it fails to start, naming it, should another
// process take it meanwhile).
func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// procCPU is the user and system CPU time process pid has used (0 if
// /proc does not say).
func procCPU(pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(stat, ')')
	f := strings.Fields(string(stat[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}
