package node

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"veil/cmd/veil/internal/dashboard"
)

// startNet starts a bridge and count-1 nodes joined through it, and waits
// until every node knows the others.
func startNet(t testing.TB, ctx context.Context, count int) []*Node {
	t.Helper()
	bc := testConfig(t, t.TempDir())
	bc.Roles.Bridge = true
	nodes := []*Node{startTest(t, ctx, bc)}
	for range count - 1 {
		nodes = append(nodes, startTest(t, ctx, testConfig(t, t.TempDir(), nodes[0].BridgeLine())))
	}
	for _, n := range nodes {
		waitFor(t, 30*time.Second, "directories", func() bool { return n.dir.Len() >= len(nodes)-2 })
	}
	return nodes
}

// scrape gets url with the header h (name, value) and returns the status
// and body.
func scrape(t *testing.T, url string, h ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(h); i += 2 {
		req.Header.Set(h[i], h[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func metricsOf(t *testing.T, n *Node) promText {
	t.Helper()
	code, body := scrape(t, "http://"+n.APIAddr()+MetricsPath, CookieHeader, n.api.cookie)
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	p, err := parsePromText(body)
	if err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	return p
}

// sum adds a series over nodes.
func sum(t *testing.T, ps []promText, series string) float64 {
	t.Helper()
	var s float64
	for _, p := range ps {
		v, ok := p.value(series)
		if !ok {
			t.Fatalf("no series %s", series)
		}
		s += v
	}
	return s
}

// /metrics is Prometheus text, wants the cookie or the view key, and its
// counters move with a get: the window's chunks, the links' bytes, the
// circuits built for it and their build times, the relayed cells and the
// ORDBs' DHT lookups.
func TestMetrics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes := startNet(t, ctx, 7)
	getter := nodes[len(nodes)-1]
	base := "http://" + getter.APIAddr() + MetricsPath

	// Who may read it.
	if code, _ := scrape(t, base); code != http.StatusUnauthorized {
		t.Fatalf("/metrics without the cookie: %d", code)
	}
	if code, _ := scrape(t, base, "Authorization", "Bearer wrong"); code != http.StatusUnauthorized {
		t.Fatalf("/metrics with a wrong bearer: %d", code)
	}
	if code, _ := scrape(t, base, "Authorization", "Bearer "+getter.api.cookie); code != http.StatusOK {
		t.Fatalf("/metrics with the cookie as bearer: %d", code)
	}
	if code, _ := scrape(t, base+"?k="+ViewKey(getter.api.cookie)); code != http.StatusOK {
		t.Fatalf("/metrics with the view key: %d", code)
	}
	if code, _ := scrape(t, base+"?k="+getter.api.cookie); code != http.StatusUnauthorized {
		t.Fatalf("/metrics with the cookie as view key: %d", code)
	}

	before := make([]promText, len(nodes))
	for i, n := range nodes {
		before[i] = metricsOf(t, n)
	}
	for _, name := range []string{
		"veil_links", "veil_link_bytes_received_total", "veil_link_bytes_sent_total",
		"veil_circuits_built_total", "veil_circuits_failed_total", "veil_circuits_active", "veil_circuits_carried",
		"veil_circuit_build_seconds", "veil_cells_relayed_total", "veil_dht_lookups_total",
		"veil_dht_lookup_rounds_total", "veil_dht_lookup_failures_total", "veil_dht_lookup_rpcs_total", "veil_dht_table_size",
		"veil_chunk_verify_failures_total", "veil_window_chunks_asked_total", "veil_window_chunks_received_total",
		"veil_window_chunks_duplicate_total", "veil_window_efficiency", "veil_window_transfers_finished_total", "veil_live_chunks_skipped_total", "veil_facilitator_fetches_total",
		"veil_transfers", "veil_ordb_queries_total", "veil_ordb_lookups_total",
	} {
		if before[0][name] == nil {
			t.Errorf("metric %s missing", name)
		}
	}
	for name, want := range map[string]string{"veil_circuits_built_total": "counter", "veil_circuit_build_seconds": "histogram", "veil_circuits_active": "gauge", "veil_dht_lookups_total": "counter"} {
		if f := before[0][name]; f == nil || f.typ != want {
			t.Errorf("%s: type %+v, want %s", name, f, want)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	data := make([]byte, 150_001)
	rand.Read(data)
	pub, err := nodes[1].Publish(ctx, "application/octet-stream", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	// While it runs, the status shows the transfer with its circuits'
	// rates (the dashboard's transfers table).
	rated := false
	if _, err := getter.Fetch(ctx, pub.Name, func(p Progress) {
		for _, tr := range getter.Status(ctx).Transfers {
			if tr.HashName == pub.Name.String() && slices.ContainsFunc(tr.Rates, func(r float64) bool { return r > 0 }) {
				rated = true
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if !rated {
		t.Error("no status during the fetch showed its circuits' rates")
	}
	after := make([]promText, len(nodes))
	for i, n := range nodes {
		after[i] = metricsOf(t, n)
	}
	g0, g1 := before[len(nodes)-1], after[len(nodes)-1]
	grew := func(series string, by float64) {
		t.Helper()
		a, _ := g0.value(series)
		b, _ := g1.value(series)
		if b-a < by {
			t.Errorf("getter's %s went from %v to %v, want at least +%v", series, a, b, by)
		}
	}
	chunks := float64((len(data) + 497) / 498)
	grew("veil_window_chunks_received_total", chunks)
	grew("veil_window_chunks_asked_total", chunks)
	grew("veil_link_bytes_received_total", float64(len(data)))
	grew("veil_circuits_built_total", 1)
	grew("veil_circuit_build_seconds_count", 1)
	// The efficiency gauge is the finished transfer's (got over what its
	// circuits could carry), none before the first.
	if eff, _ := g0.value("veil_window_efficiency"); !math.IsNaN(eff) {
		t.Errorf("window efficiency %v before any transfer, want NaN", eff)
	}
	if eff, _ := g1.value("veil_window_efficiency"); !(eff > 0 && eff <= 1) {
		t.Errorf("window efficiency %v after a get", eff)
	}
	if a, _ := g0.value("veil_window_transfers_finished_total"); a != 0 {
		t.Errorf("%v transfers finished before any", a)
	}
	if b, _ := g1.value("veil_window_transfers_finished_total"); b != 1 {
		t.Errorf("%v transfers finished after one get, want 1", b)
	}
	if v, _ := g1.value("veil_chunk_verify_failures_total"); v != 0 {
		t.Errorf("%v verification failures in a clean get", v)
	}
	// The getter's circuits crossed relays, and the publisher's ORDBs
	// announced the content in the DHT (a lookup, then STOREs). (The
	// getter's ORDBs may not look it up: in a network this small they
	// can be the publisher's and know it already.)
	if b, a := sum(t, before, "veil_cells_relayed_total"), sum(t, after, "veil_cells_relayed_total"); a-b < chunks {
		t.Errorf("cells relayed over all nodes went from %v to %v", b, a)
	}
	if b, a := sum(t, before, `veil_dht_lookups_total{kind="provide"}`), sum(t, after, `veil_dht_lookups_total{kind="provide"}`); a <= b {
		t.Errorf("provide lookups over all nodes went from %v to %v", b, a)
	}
	if b, a := sum(t, before, "veil_dht_lookup_rounds_total"), sum(t, after, "veil_dht_lookup_rounds_total"); a <= b {
		t.Errorf("lookup rounds over all nodes went from %v to %v", b, a)
	}
}

// The dashboard's page and events want the view key; the page served
// with it embeds it and nothing from elsewhere.
func TestDashboardAccess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := testConfig(t, t.TempDir())
	n := startTest(t, ctx, c)
	base := "http://" + n.APIAddr()
	key := ViewKey(n.api.cookie)
	wrong := key[:31] + map[bool]string{true: "1", false: "0"}[key[31] == '0']
	for _, p := range []string{"/", "/dashboard/status", "/dashboard/events", "/?k=" + wrong, "/dashboard/events?k=" + wrong} {
		if code, _ := scrape(t, base+p); code != http.StatusUnauthorized {
			t.Errorf("%s without the key: %d", p, code)
		}
	}
	code, page := scrape(t, n.DashboardURL())
	if code != http.StatusOK || !strings.Contains(page, `content="`+key+`"`) || strings.Contains(page, n.api.cookie) {
		t.Fatalf("page with the key: %d\n%s", code, page)
	}
	if regexp.MustCompile(`(src|href)="(https?:)?//`).MatchString(page) {
		t.Fatalf("page loads something from elsewhere:\n%s", page)
	}
	if code, body := scrape(t, base+"/dashboard/status?k="+key); code != http.StatusOK || !strings.Contains(body, `"own_circuits"`) {
		t.Fatalf("status with the key: %d %s", code, body)
	}
	// The view key does not open the API.
	if code, _ := scrape(t, base+"/api/v1/status?k="+key); code != http.StatusUnauthorized {
		t.Fatalf("/api/v1/status with the view key: %d", code)
	}
	// The event stream: an event a second, each with the status and the
	// bandwidth history, which grows.
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/dashboard/events?k="+key, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); res.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("events: %d %s", res.StatusCode, ct)
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(nil, 1<<20)
	var evs []dashboard.Event
	for len(evs) < 3 && sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("not an SSE data line: %q", line)
		}
		var ev dashboard.Event
		if err := json.Unmarshal([]byte(data), &ev); err != nil || ev.Status == nil {
			t.Fatalf("event %q: %v", data, err)
		}
		evs = append(evs, ev)
	}
	if len(evs) < 3 {
		t.Fatalf("got %d events: %v", len(evs), sc.Err())
	}
	if evs[2].T-evs[0].T < 1500 || len(evs[2].History) <= len(evs[0].History) || len(evs[2].History) == 0 {
		t.Fatalf("events at %d, %d ms with %d, %d samples", evs[0].T, evs[2].T, len(evs[0].History), len(evs[2].History))
	}
	for _, f := range []string{"app.js", "style.css"} {
		if code, _ := scrape(t, base+"/dashboard/static/"+f); code != http.StatusOK {
			t.Errorf("static %s: %d", f, code)
		}
	}
	// An open event stream does not hold up the node's Close, and ends.
	t0 := time.Now()
	n.Close()
	if d := time.Since(t0); d > 3*time.Second {
		t.Fatalf("Close took %v with an event stream open", d)
	}
	if _, err := io.Copy(io.Discard, res.Body); err != nil {
		t.Logf("the stream ended with %v", err)
	}
	res.Body.Close()
}

// chromiumArgs are the flags of a headless run that talks to nothing but
// the page it is given.
func chromiumArgs(dir string) []string {
	return []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
		"--user-data-dir=" + dir}
}

// The dashboard in a real browser: Debian's chromium renders the
// circuits table and the bandwidth chart from the node's events, and a
// screenshot of it is saved in the test's directory.
func TestDashboardChromium(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not installed (Debian package chromium)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes := startNet(t, ctx, 7)
	n := nodes[len(nodes)-1]
	waitFor(t, 30*time.Second, "circuits", func() bool { return len(n.sw.Origins()) > 0 })
	data := make([]byte, 100_001)
	rand.Read(data)
	pub, err := nodes[1].Publish(ctx, "application/octet-stream", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Fetch(ctx, pub.Name, nil); err != nil {
		t.Fatal(err)
	}
	url := n.DashboardURL()
	tmp := t.TempDir()

	// The page draws the first snapshot at once and opens its event
	// stream a second later: a virtual-time budget shorter than that
	// ends (virtual time stops while the stream is open) with the page
	// drawn. The stream itself is checked in TestDashboardAccess.
	var dom string
	for attempt := 0; attempt < 3; attempt++ {
		cctx, ccancel := context.WithTimeout(ctx, 40*time.Second)
		args := append(chromiumArgs(filepath.Join(tmp, "profile-dom")), "--virtual-time-budget=300", "--dump-dom", url)
		out, err := exec.CommandContext(cctx, bin, args...).Output()
		ccancel()
		if err != nil {
			t.Fatalf("chromium --dump-dom: %v", err)
		}
		dom = string(out)
		if strings.Contains(dom, "data-updated=") {
			break
		}
	}
	t.Logf("DOM: %d bytes", len(dom))
	if !strings.Contains(dom, "data-updated=") {
		t.Fatalf("the page never rendered an update:\n%s", dom)
	}
	// The circuits table has a row per circuit: id, use, hops, path.
	rows := regexp.MustCompile(`<tr><td class="mono">\d+</td><td>[a-zA-Z ]+</td><td>3</td><td class="mono">[0-9a-f]{8} → [0-9a-f]{8} → [0-9a-f]{8}</td>`).FindAllString(dom, -1)
	if len(rows) == 0 {
		t.Fatalf("no 3-hop circuit rows in the circuits table:\n%s", dom)
	}
	if !regexp.MustCompile(`(?s)<table id="peers">.*?<td class="mono">[0-9a-f]{8}</td><td class="mono">127\.0\.0\.1:\d+</td>`).MatchString(dom) {
		t.Fatalf("no link in the links table:\n%s", dom)
	}
	if !regexp.MustCompile(`<svg id="bandwidth"[^>]*>`).MatchString(dom) || !regexp.MustCompile(`<polyline id="chart-in" class="in" points="[0-9., ]*"`).MatchString(dom) {
		t.Fatalf("no bandwidth chart:\n%s", dom)
	}
	if !regexp.MustCompile(`id="chart-max"[^>]*>peak `).MatchString(dom) {
		t.Fatalf("the chart was not drawn:\n%s", dom)
	}

	// Live: left open, the page renders the events of its stream (it
	// logs to the console at the second one). A second try if chromium
	// quits without it, as it rarely does on a loaded machine.
	var log string
	live := false
	for attempt := 0; attempt < 2 && !live; attempt++ {
		live, log = chromiumLive(t, ctx, bin, filepath.Join(tmp, fmt.Sprintf("profile-live%d", attempt)), url)
	}
	if !live {
		t.Fatalf("chromium rendered no events from the dashboard's stream; its log:\n%s", log)
	}

	shot := filepath.Join(tmp, "dashboard.png")
	cctx, ccancel := context.WithTimeout(ctx, 40*time.Second)
	defer ccancel()
	args := append(chromiumArgs(filepath.Join(tmp, "profile-shot")), "--virtual-time-budget=300", "--window-size=1200,1400", "--screenshot="+shot, url)
	if out, err := exec.CommandContext(cctx, bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("chromium --screenshot: %v\n%s", err, out)
	}
	b, err := os.ReadFile(shot)
	if err != nil || len(b) < 1000 || !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Fatalf("screenshot %s: %d bytes, %v", shot, len(b), err)
	}
	t.Logf("screenshot %s (%d bytes)", shot, len(b))
}

// syncLines collects lines from one goroutine for another.
type syncLines struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLines) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(s + "\n")
}

func (l *syncLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// chromiumLive opens url in chromium and reports whether the page logged
// that it rendered two events of its stream within 40 s, and chromium's
// log.
func chromiumLive(t *testing.T, ctx context.Context, bin, profile, url string) (bool, string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, append(chromiumArgs(profile), "--enable-logging=stderr", url)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // chromium's helpers go with it
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	seen := make(chan bool, 1)
	var lines syncLines
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines.add(sc.Text())
			if strings.Contains(sc.Text(), "veil dashboard: live, 2 events rendered") {
				seen <- true
				break
			}
		}
		close(seen)
		_, _ = io.Copy(io.Discard, stderr)
	}()
	var ok bool
	select {
	case ok = <-seen:
	case <-time.After(40 * time.Second):
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Wait()
	return ok, lines.String()
}
