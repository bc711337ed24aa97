package node_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"veil/cmd/veil/internal/config"
	"veil/cmd/veil/internal/node"
	"veil/cmd/veil/internal/procnet"
	"veil/proto"
)

// cellLinks is an Observer keeping the peers whose links carried circuit
// cells to the node (a node sees those of its circuits' neighbours; for
// a client, only its first hops and, for the directory, its bridges).
type cellLinks struct {
	mu    sync.Mutex
	peers map[proto.NodeID]netip.AddrPort
}

func (c *cellLinks) Link(peer proto.NodeID, remote netip.AddrPort, _ bool) {
	c.mu.Lock()
	c.peers[peer] = remote
	c.mu.Unlock()
}
func (c *cellLinks) DB(node.DBEvent)                               {}
func (c *cellLinks) DHT(proto.NodeID, proto.DHTType, proto.NodeID) {}
func (c *cellLinks) Path([]proto.NodeID)                           {}

func (c *cellLinks) from(ip netip.Addr) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range c.peers {
		if a.Addr() == ip {
			return true
		}
	}
	return false
}

// ipCmd runs ip with args.
func ipCmd(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// netnsPair makes a network namespace joined to ours by a veth pair: our
// end hostIP/24, its end nsIP/24. Both are removed when t ends.
func netnsPair(t *testing.T) (ns string, hostIP, nsIP netip.Addr) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root: skipping the netns test")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("the ip tool (iproute2) is missing: skipping the netns test")
	}
	x := mrand.IntN(200) + 20
	tag := strconv.Itoa(os.Getpid()%10000) + "x" + strconv.Itoa(x)
	ns, host, peer := "veilt"+tag, "vh"+tag, "vn"+tag
	hostIP = netip.AddrFrom4([4]byte{10, 213, byte(x), 1})
	nsIP = netip.AddrFrom4([4]byte{10, 213, byte(x), 2})
	if err := ipCmd("netns", "add", ns); err != nil {
		t.Skipf("cannot make a network namespace here: %v", err)
	}
	t.Cleanup(func() {
		_ = ipCmd("netns", "del", ns) // takes the veth pair with it
		_ = exec.Command("ip", "link", "del", host).Run()
	})
	for _, args := range [][]string{
		{"link", "add", host, "type", "veth", "peer", "name", peer},
		{"link", "set", peer, "netns", ns},
		{"addr", "add", hostIP.String() + "/24", "dev", host},
		{"link", "set", host, "up"},
		{"-n", ns, "addr", "add", nsIP.String() + "/24", "dev", peer},
		{"-n", ns, "link", "set", peer, "up"},
		{"-n", ns, "link", "set", "lo", "up"},
	} {
		if err := ipCmd(args...); err != nil {
			t.Fatal(err)
		}
	}
	return ns, hostIP, nsIP
}

// tcpPeers reads the TCP sockets of pid's network namespace
// (/proc/PID/net/tcp) and returns the remote endpoints of those
// connected or connecting from local.
func tcpPeers(pid int, local netip.Addr) ([]netip.AddrPort, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []netip.AddrPort
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 4 {
			continue
		}
		// 01 ESTABLISHED, 02 SYN_SENT: a connection we made or make.
		if fs[3] != "01" && fs[3] != "02" {
			continue
		}
		l, err1 := procAddr(fs[1])
		r, err2 := procAddr(fs[2])
		if err1 != nil || err2 != nil || l.Addr() != local {
			continue
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// procAddr reads /proc/net/tcp's "0100007F:1F90" (IPv4 in host order).
func procAddr(s string) (netip.AddrPort, error) {
	h, p, ok := strings.Cut(s, ":")
	b, err := hex.DecodeString(h)
	if !ok || err != nil || len(b) != 4 {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{b[3], b[2], b[1], b[0]}), uint16(port)), nil
}

// TestAnonymousNetns: a `veil node` with anonymous = true runs in a network
// namespace of its own, joined to the test's nodes by a veth pair; while
// it bootstraps and a `veil get` (in the same namespace) fetches through
// it, the namespace's TCP sockets are read: every connection goes to a
// bridge or to a node that carried circuit cells from it (a first hop).
// Nothing else: no DHT node, no ORDB, no node it merely learnt of.
//
// The relays extend circuits to 10.213.x.y: they run with allow_private
// (which also lets a relay's EXTEND2 reach private addresses where the
// relay checks them).
func TestAnonymousNetns(t *testing.T) {
	ns, hostIP, nsIP := netnsPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The network, in this process, on our end of the veth pair.
	obs := map[proto.NodeID]*cellLinks{}
	var nodes []*node.Node
	start := func(roles config.Roles, bridges ...string) *node.Node {
		c := config.Default()
		c.Listen, c.HTTP, c.DataDir, c.AllowPrivate = hostIP.String()+":0", "", t.TempDir(), true
		c.Control.Listen, c.SOCKS = "", ""
		c.Roles, c.Bridges = roles, bridges
		c.Tunnels.MinCircuits, c.Tunnels.MaxCircuits = 2, 2
		o := &cellLinks{peers: map[proto.NodeID]netip.AddrPort{}}
		n, err := node.Start(node.Options{Config: c, Observer: o})
		if err != nil {
			t.Fatal(err)
		}
		go n.Run(ctx)
		t.Cleanup(func() { n.Close() })
		obs[n.ID()] = o
		nodes = append(nodes, n)
		return n
	}
	bridge := start(config.Roles{Relay: true, Bridge: true})
	for i := range 11 {
		start(config.Roles{Relay: true, ORDB: i >= 4}, bridge.BridgeLine())
	}
	for _, n := range nodes {
		deadline := time.Now().Add(60 * time.Second)
		for n.Status(ctx).Directory < len(nodes)-2 {
			if time.Now().After(deadline) {
				t.Fatalf("directory of %s: %d", n.ID().Short(), n.Status(ctx).Directory)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	data := make([]byte, 300_001)
	rand.Read(data)
	pub, err := nodes[len(nodes)-1].Publish(ctx, "application/octet-stream", bytes.NewReader(data))
	if err != nil || pub.Advertised == 0 {
		t.Fatalf("publish: %+v %v", pub, err)
	}

	// The anonymous requester, in the namespace.
	root := t.TempDir()
	bin := buildVeil(t, root)
	pn := procnet.New("ip", root)
	t.Cleanup(pn.Close)
	dataDir := filepath.Join(root, "requester")
	cfgPath := filepath.Join(root, "anon.toml")
	file := fmt.Sprintf("anonymous = true\nlisten = \"\"\nsocks = \"\"\nhttp = \"127.0.0.1:0\"\nallow_private = true\ndata_dir = %q\nbridges = [%q]\n[roles]\nrelay = false\nordb = false\n[control]\nlisten = \"\"\n", dataDir, bridge.BridgeLine())
	if err := os.WriteFile(cfgPath, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	req := spawn(t, pn, "requester", dataDir, "netns", "exec", ns, bin, "node", "--config", cfgPath, "-v")
	defer req.Stop(syscall.SIGTERM, 10*time.Second)

	// Read the namespace's sockets from the node's start to the get's end.
	seen := map[netip.AddrPort]bool{}
	var seenMu sync.Mutex
	stop := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		for {
			if peers, err := tcpPeers(req.PID(), nsIP); err == nil {
				seenMu.Lock()
				for _, p := range peers {
					seen[p] = true
				}
				seenMu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-req.Done():
				return
			case <-tk.C:
			}
		}
	}()
	// Its local API is up (else veil get would start a client of its own).
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := os.Stat(filepath.Join(dataDir, node.APIAddrFile)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the requester's API never came up:\n%s", pn.Log("requester"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	out := filepath.Join(root, "out")
	var getErr error
	for attempt := 0; attempt < 10; attempt++ {
		get := spawn(t, pn, fmt.Sprintf("get%d", attempt), "", "netns", "exec", ns, bin, "get", "--config", cfgPath, "-o", out, pub.Name.String())
		if getErr = get.Wait(60 * time.Second); getErr == nil {
			break
		}
		// The node may still be joining (no ORDB known yet): again.
		time.Sleep(500 * time.Millisecond)
	}
	close(stop)
	<-polled
	if getErr != nil {
		t.Fatalf("get: %v\n%s\nrequester:\n%s", getErr, pn.Log("get0"), pn.Log("requester"))
	}
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("fetched content differs (%v)", err)
	}

	// Who it connected to.
	byPort := map[uint16]proto.NodeID{}
	for _, n := range nodes {
		byPort[n.Addr().Port()] = n.ID()
	}
	seenMu.Lock()
	defer seenMu.Unlock()
	firstHops := 0
	for p := range seen {
		id, ok := byPort[p.Port()]
		switch {
		case p.Addr() != hostIP || !ok:
			t.Errorf("the anonymous node connected to %v, no node of the network", p)
		case id == bridge.ID():
		case obs[id].from(nsIP):
			firstHops++
		default:
			t.Errorf("the anonymous node connected to %v (node %s), neither a bridge nor a first hop of its circuits", p, id.Short())
		}
	}
	if firstHops == 0 {
		t.Fatalf("no connection to a first hop seen (%d sockets)", len(seen))
	}
	// And from the network's side: only the bridge and first hops had a
	// link from the namespace carrying cells, so at most those.
	t.Logf("the anonymous node connected to %d first hops and the bridge; %d nodes in the network", firstHops, len(nodes))
}
