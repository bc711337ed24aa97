package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"veil/circuits"
	"veil/proto"
)

const curlPath = "/usr/bin/curl"

// needCurl skips t when Debian's curl is missing.
func needCurl(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(curlPath); err != nil {
		t.Skip("needs curl (apt package curl)")
	}
}

// runCurl runs curl with args (no proxy variables from the environment)
// and returns stdout, stderr and the exit code.
func runCurl(t testing.TB, args ...string) ([]byte, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, curlPath, append([]string{"-sS", "--max-time", "50"}, args...)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), errb.String(), code
}

// exitNet is a network on 127.0.0.1: a bridge, relays, an exit allowed
// to reach the origin server (and nothing else), an exit whose summary
// claims every port but whose policy refuses 127.0.0.1, and a client.
type exitNet struct {
	nodes  []*Node
	client *Node
	origin string // the local HTTP server's host:port
	port   string
	file   []byte
}

// startOrigin serves size random bytes as /file on 127.0.0.1 until t
// ends; it returns them and the server's port.
func startOrigin(t testing.TB, size int) (file []byte, port string) {
	t.Helper()
	file = make([]byte, size)
	rand.Read(file)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	origin := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, path) // sendfile: the origin costs next to nothing
	})}
	go origin.Serve(ln)
	t.Cleanup(func() { origin.Close() })
	_, port, _ = net.SplitHostPort(ln.Addr().String())
	return file, port
}

func newExitNet(t testing.TB, ctx context.Context, fileSize int) *exitNet {
	t.Helper()
	en := &exitNet{}
	en.file, en.port = startOrigin(t, fileSize)
	en.origin = "127.0.0.1:" + en.port

	bc := testConfig(t, t.TempDir())
	bc.Roles.Bridge = true
	bridge := startTest(t, ctx, bc)
	en.nodes = []*Node{bridge}
	for i := range 7 {
		c := testConfig(t, t.TempDir(), bridge.BridgeLine())
		switch i {
		case 0:
			c.Roles.Exit, c.Exit.AllowPrivate = true, true
			c.Exit.Policy = []string{"accept 127.0.0.1:" + en.port, "reject *:*"}
		case 1:
			c.Roles.Exit, c.Exit.AllowPrivate = true, true
			c.Exit.Policy = []string{"reject 127.0.0.1:*", "accept *:*"}
		}
		en.nodes = append(en.nodes, startTest(t, ctx, c))
	}
	en.client = en.nodes[len(en.nodes)-1]
	for _, n := range en.nodes {
		waitFor(t, 30*time.Second, "directories", func() bool { return n.dir.Len() >= len(en.nodes)-2 })
	}
	waitFor(t, 30*time.Second, "the client to know both exits", func() bool {
		exits := 0
		for _, d := range en.client.dir.Nodes() {
			if d.Flags&proto.FlagExit != 0 && len(d.ExitPorts) > 0 {
				exits++
			}
		}
		return exits == 2
	})
	return en
}

// curl through a node's SOCKS port: content by hash_name, a local file
// through a 3-hop circuit and an exit, SOCKS4a too, a refused destination,
// and streams isolated by SOCKS credentials.
func TestSOCKSCurl(t *testing.T) {
	needCurl(t)
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	en := newExitNet(t, ctx, 1<<20+7)
	proxy := en.client.SOCKSAddr()

	data := make([]byte, 150_001)
	rand.Read(data)
	var pub Published
	waitFor(t, 30*time.Second, "a publication reaching ORDBs", func() bool {
		var err error
		pub, err = en.nodes[3].Publish(ctx, "application/octet-stream", bytes.NewReader(data))
		return err == nil && pub.Advertised > 0
	})
	for _, how := range []string{"--socks5-hostname", "--socks4a"} {
		got, stderr, code := runCurl(t, how, proxy, "http://"+pub.Name.String()+".veil/")
		if code != 0 || !bytes.Equal(got, data) {
			t.Fatalf("%s %s.veil: exit %d, %d bytes of %d: %s", how, pub.Name, code, len(got), len(data), stderr)
		}
	}

	// Ranges, as the gateway serves them.
	if got, stderr, code := runCurl(t, "--socks5-hostname", proxy, "-r", "1000-1999", "http://"+pub.Name.String()+".veil/"); code != 0 || !bytes.Equal(got, data[1000:2000]) {
		t.Fatalf("range through SOCKS: exit %d, %d bytes: %s", code, len(got), stderr)
	}

	for _, tc := range []struct{ how, host string }{
		{"--socks5-hostname", "127.0.0.1"}, {"--socks5-hostname", "localhost"}, {"--socks4a", "localhost"}, {"--socks4a", "127.0.0.1"},
	} {
		got, stderr, code := runCurl(t, tc.how, proxy, "http://"+tc.host+":"+en.port+"/file")
		if code != 0 || !bytes.Equal(got, en.file) {
			t.Fatalf("%s %s through the exit: exit %d, %d bytes of %d: %s", tc.how, tc.host, code, len(got), len(en.file), stderr)
		}
	}
	// The circuits the client used end at an exit, three hops out.
	for k, cs := range en.client.exits.Circuits() {
		for _, c := range cs {
			if p := c.Path(); len(p) != 3 || p[2].Flags&proto.FlagExit == 0 {
				t.Fatalf("%s: exit circuit of %d hops, last flags %#x", k, len(p), p[len(p)-1].Flags)
			}
		}
	}

	// A port no exit allows: SOCKS5 reply 2, not allowed by ruleset.
	other, _ := strconv.Atoi(en.port)
	refused := "http://127.0.0.1:" + strconv.Itoa(other+1) + "/"
	if _, stderr, code := runCurl(t, "--socks5-hostname", proxy, refused); code != 97 || !strings.Contains(stderr, "(2)") {
		t.Fatalf("refused destination: curl exit %d %q, want 97 and SOCKS5 reply (2)", code, stderr)
	}
	if _, stderr, code := runCurl(t, "--socks4a", proxy, refused); code != 97 {
		t.Fatalf("refused destination over SOCKS4a: curl exit %d %q, want 97", code, stderr)
	}

	// A node that knows no exit answers SOCKS5 reply 3, network
	// unreachable.
	lone := startTest(t, ctx, testConfig(t, t.TempDir()))
	if _, stderr, code := runCurl(t, "--socks5-hostname", lone.SOCKSAddr(), url0(en)); code != 97 || !strings.Contains(stderr, "(3)") {
		t.Fatalf("no exit: curl exit %d %q, want 97 and SOCKS5 reply (3)", code, stderr)
	}

	// Two credentials never share a circuit; the same credentials again
	// take no new one. (A key may hold two circuits: one to the exit
	// that refuses everything, which it tried first.)
	url := "http://127.0.0.1:" + en.port + "/file"
	circuitsOf := func(user string) map[*circuits.Circuit]bool {
		out := map[*circuits.Circuit]bool{}
		for k, cs := range en.client.exits.Circuits() {
			if strings.HasPrefix(k, "socks5:"+strconv.Itoa(len(user))+":"+user+":") {
				for _, c := range cs {
					out[c] = true
				}
			}
		}
		return out
	}
	var alice1 map[*circuits.Circuit]bool
	for i, up := range []string{"alice:1", "bob:2", "alice:1"} {
		if got, stderr, code := runCurl(t, "--socks5-hostname", proxy, "--proxy-user", up, url); code != 0 || !bytes.Equal(got, en.file) {
			t.Fatalf("as %s: exit %d %s", up, code, stderr)
		}
		if i == 0 {
			alice1 = circuitsOf("alice")
		}
	}
	alice, bob := circuitsOf("alice"), circuitsOf("bob")
	if len(alice) == 0 || len(bob) == 0 || len(alice) != len(alice1) {
		t.Fatalf("isolation: alice on %d circuits (%d after her first stream), bob on %d", len(alice), len(alice1), len(bob))
	}
	for c := range alice {
		if bob[c] || !alice1[c] {
			t.Fatalf("circuit %d: alice's and bob's streams share it, or alice's second stream took a new one", c.ID())
		}
	}
}

func url0(en *exitNet) string { return "http://127.0.0.1:" + en.port + "/file" }

// A new exit.policy (SETCONF, SIGNAL RELOAD) applies to the next BEGIN
// and to the descriptor's port summary at once; other keys wait for a
// restart.
func TestExitPolicyReload(t *testing.T) {
	needCurl(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	en := newExitNet(t, ctx, 1000)
	proxy := []string{"--socks5-hostname", en.client.SOCKSAddr()}
	url := "http://127.0.0.1:" + en.port + "/file"
	if got, stderr, code := runCurl(t, append(proxy, url)...); code != 0 || !bytes.Equal(got, en.file) {
		t.Fatalf("before: exit %d, %d bytes: %s", code, len(got), stderr)
	}
	exit := en.nodes[1] // the exit that accepts the origin
	cfg := *exit.cfg.Load()
	cfg.Exit.Policy = []string{"reject *:*"}
	cfg.Tunnels.MinCircuits-- // not at run time: stays
	if err := exit.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if got := *exit.cfg.Load(); !slices.Equal(got.Exit.Policy, cfg.Exit.Policy) || got.Tunnels.MinCircuits == cfg.Tunnels.MinCircuits {
		t.Fatalf("running config after the reload: policy %q, min_circuits %d", got.Exit.Policy, got.Tunnels.MinCircuits)
	}
	if d := exit.desc.Load(); len(d.ExitPorts) != 0 {
		t.Fatalf("the descriptor still offers ports %v", d.ExitPorts)
	}
	if _, _, code := runCurl(t, append(proxy, url)...); code == 0 {
		t.Fatal("the exit still connected to the origin after rejecting everything")
	}
	bad := *exit.cfg.Load()
	bad.Exit.Policy = []string{"accept nonsense"}
	if err := exit.Reload(bad); err == nil {
		t.Fatal("a policy that does not parse was taken")
	}
}

// relay_bandwidth_rate changes at run time between two limits; a node
// started without one keeps none until it restarts.
func TestBandwidthReload(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, start := range []string{"8MB", "0"} {
		c := testConfig(t, t.TempDir())
		c.RelayBandwidthRate = start
		n := startTest(t, ctx, c)
		next := *n.cfg.Load()
		next.RelayBandwidthRate, next.RelayBandwidthBurst = "4MB", "2MiB"
		if err := n.Reload(next); err != nil {
			t.Fatal(err)
		}
		got := n.cfg.Load()
		if start == "0" {
			if got.RelayBandwidthRate != "0" || n.writeLimit != nil {
				t.Errorf("started without a limit: running rate %q after the reload", got.RelayBandwidthRate)
			}
			continue
		}
		if got.RelayBandwidthRate != "4MB" || got.RelayBandwidthBurst != "2MiB" || n.writeLimit == nil {
			t.Errorf("started at %s: running %q / %q after the reload", start, got.RelayBandwidthRate, got.RelayBandwidthBurst)
		}
	}
}
