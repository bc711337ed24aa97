package control_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"veil/cmd/veil/internal/config"
	"veil/cmd/veil/internal/control"
	"veil/cmd/veil/internal/node"
)

// testNet starts a bridge and relays on 127.0.0.1 and one more node
// (returned) whose control port is on; it returns once that node has
// built its circuits.
func testNet(t *testing.T, others int) *node.Node {
	t.Helper()
	n, _ := testNetAll(t, others)
	return n
}

// testNetAll is testNet that also returns the other nodes.
func testNetAll(t *testing.T, others int) (*node.Node, []*node.Node) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	conf := func(bridges ...string) config.Config {
		c := config.Default()
		c.Listen, c.HTTP, c.DataDir, c.AllowPrivate = "127.0.0.1:0", "", t.TempDir(), true
		c.Control.Listen, c.SOCKS = "", ""
		c.Bridges = bridges
		c.Tunnels.MinCircuits, c.Tunnels.MaxCircuits = 2, 2
		return c
	}
	start := func(c config.Config) *node.Node {
		n, err := node.Start(node.Options{Config: c})
		if err != nil {
			t.Fatal(err)
		}
		go n.Run(ctx)
		t.Cleanup(func() { n.Close() })
		return n
	}
	bc := conf()
	bc.Roles.Bridge = true
	bridge := start(bc)
	all := []*node.Node{bridge}
	for range others {
		all = append(all, start(conf(bridge.BridgeLine())))
	}
	mc := conf(bridge.BridgeLine())
	mc.Control.Listen = "127.0.0.1:0"
	n := start(mc)
	waitFor(t, 60*time.Second, "two built circuits", func() bool {
		return len(n.Status(ctx).Circuits) >= 2
	})
	return n, all
}

// waitFor polls cond for at most d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func needStem(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("needs /usr/bin/python3 (Debian package python3) and python3-stem")
	}
	if err := exec.Command("/usr/bin/python3", "-c", "import stem.control").Run(); err != nil {
		t.Skip("needs python3-stem (Debian package python3-stem)")
	}
}

// Debian's stem drives the control port: it authenticates with the
// cookie, reads the version, lists the node's circuits with their hops,
// sees a new circuit built after NEWNYM and BW events; a wrong cookie is
// refused and the connection closed.
func TestStemController(t *testing.T) {
	needStem(t)
	n := testNet(t, 4)
	port := n.ControlAddr()[strings.LastIndexByte(n.ControlAddr(), ':')+1:]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	want := n.Status(ctx).Circuits // the pool's built circuits, before stem connects

	out, err := exec.CommandContext(ctx, "/usr/bin/python3", "testdata/stem_check.py", port, "ok").Output()
	if err != nil {
		t.Fatalf("stem script: %v\n%s", err, stderrOf(err))
	}
	var got struct {
		Version       string `json:"version"`
		ParsedVersion string `json:"parsed_version"`
		PID           int    `json:"pid"`
		Fingerprint   string `json:"fingerprint"`
		Circuits      []struct {
			ID     string   `json:"id"`
			Status string   `json:"status"`
			Path   []string `json:"path"`
			Nicks  []string `json:"nicks"`
		} `json:"circuits"`
		Built *struct {
			ID   string   `json:"id"`
			Path []string `json:"path"`
		} `json:"built_after_newnym"`
		BW          [][2]int64 `json:"bw"`
		PlainCookie string     `json:"plain_cookie_version"`
		NS          []struct {
			Fingerprint string `json:"fingerprint"`
			Nickname    string `json:"nickname"`
			Address     string `json:"address"`
			ORPort      int    `json:"or_port"`
		} `json:"ns"`
		ORConns []struct {
			Fingerprint string `json:"fingerprint"`
			Status      string `json:"status"`
		} `json:"orconns"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("stem script output %q: %v", out, err)
	}
	if got.Version != control.TorVersion || !strings.HasPrefix(got.ParsedVersion, "0.4.9.0") {
		t.Errorf("version %q, stem parsed %q", got.Version, got.ParsedVersion)
	}
	if got.PID != os.Getpid() {
		t.Errorf("pid %d, want %d", got.PID, os.Getpid())
	}
	if got.Fingerprint != control.Fingerprint(n.ID()) {
		t.Errorf("fingerprint %q, want %q", got.Fingerprint, control.Fingerprint(n.ID()))
	}
	// Every circuit of the pool is listed, BUILT, with its hops in order.
	for _, w := range want {
		var path []string
		for _, h := range w.Path {
			path = append(path, strings.ToUpper(h))
		}
		found := false
		for _, c := range got.Circuits {
			if c.Status == "BUILT" && slices.Equal(c.Path, path) {
				found = true
				for i, nick := range c.Nicks {
					if !strings.HasPrefix(strings.ToLower(path[i]), strings.TrimPrefix(nick, "veil")) {
						t.Errorf("hop %s has nickname %s", path[i], nick)
					}
				}
			}
		}
		if !found {
			t.Errorf("pool circuit %v (path %v) not among stem's circuits %+v", w.ID, path, got.Circuits)
		}
	}
	if len(want) == 0 || len(got.Circuits) < len(want) {
		t.Errorf("stem saw %d circuits, the pool has %d", len(got.Circuits), len(want))
	}
	if got.Built == nil || len(got.Built.Path) != 3 {
		t.Errorf("no new 3-hop circuit BUILT after NEWNYM: %+v", got.Built)
	}
	// stem finds the first circuit's hops in the network status.
	if len(got.Circuits) == 0 || len(got.NS) != len(got.Circuits[0].Path) {
		t.Errorf("network status of the first circuit's hops: %+v", got.NS)
	}
	for i, e := range got.NS {
		if e.Fingerprint != got.Circuits[0].Path[i] || e.Nickname != got.Circuits[0].Nicks[i] || e.Address != "127.0.0.1" || e.ORPort == 0 {
			t.Errorf("hop %d: network status %+v", i, e)
		}
	}
	// Every first hop is a link stem sees as a CONNECTED ORCONN.
	for _, c := range got.Circuits {
		found := false
		for _, o := range got.ORConns {
			found = found || o.Fingerprint == c.Path[0] && o.Status == "CONNECTED"
		}
		if c.Status == "BUILT" && !found {
			t.Errorf("first hop %s of circuit %s is not among the links %+v", c.Path[0], c.ID, got.ORConns)
		}
	}
	if got.PlainCookie != control.TorVersion {
		t.Errorf("after the plain cookie method, version %q", got.PlainCookie)
	}
	if len(got.BW) < 2 {
		t.Errorf("%d BW events in 10 s", len(got.BW))
	}

	// A wrong cookie: the plain method is refused (515) and the
	// connection closed; with SAFECOOKIE stem sees that the node's
	// challenge was not made with its cookie and gives up before
	// answering, and the connection, not authenticated, is refused
	// anything further.
	bad := filepath.Join(t.TempDir(), "bad.cookie")
	if err := os.WriteFile(bad, make([]byte, control.CookieLen), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = exec.CommandContext(ctx, "/usr/bin/python3", "testdata/stem_check.py", port, "wrongcookie", bad).Output()
	if err != nil {
		t.Fatalf("stem script: %v\n%s", err, stderrOf(err))
	}
	var wrong map[string]string
	if err := json.Unmarshal(out, &wrong); err != nil {
		t.Fatalf("stem script output %q: %v", out, err)
	}
	for m, want := range map[string]string{"cookie": "IncorrectCookieValue", "safecookie": "AuthSecurityFailure"} {
		if wrong[m] != want || wrong[m+"_after"] == "answered" {
			t.Errorf("wrong cookie with %s: %s (want %s), then %s", m, wrong[m], want, wrong[m+"_after"])
		}
	}
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
