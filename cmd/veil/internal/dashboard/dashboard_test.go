package dashboard

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fixture is a dashboard on a fake clock and fake traffic counters.
type fixture struct {
	d       *Dashboard
	now     time.Time
	in, out atomic.Uint64
}

func newFixture() *fixture {
	f := &fixture{now: time.Unix(1_700_000_000, 0)}
	f.d = New(Config{
		Snapshot:   func(context.Context) any { return map[string]int{"links": 3} },
		Traffic:    func() (uint64, uint64) { return f.in.Load(), f.out.Load() },
		Authorized: func(r *http.Request) bool { return r.URL.Query().Get("k") == "key" },
		Key:        func(*http.Request) string { return "key" },
		Now:        func() time.Time { return f.now },
	})
	return f
}

// The history holds the rates between samples, oldest first, and keeps
// the last historyLen.
func TestHistory(t *testing.T) {
	f := newFixture()
	f.d.sample() // the baseline
	for i := range historyLen + 10 {
		f.now = f.now.Add(2 * time.Second)
		f.in.Add(uint64(1000 * (i + 1)))
		f.out.Add(500)
		f.d.sample()
	}
	ev := f.d.event(context.Background())
	if len(ev.History) != historyLen {
		t.Fatalf("%d samples, want %d", len(ev.History), historyLen)
	}
	last := ev.History[historyLen-1]
	if last.In != float64(1000*(historyLen+10))/2 || last.Out != 250 || last.T != f.now.UnixMilli() {
		t.Fatalf("last sample %+v", last)
	}
	if first := ev.History[0]; first.In != float64(1000*11)/2 {
		t.Fatalf("first sample %+v: the oldest were not dropped", first)
	}
	if ev.In != f.in.Load() || ev.Status == nil {
		t.Fatalf("event %+v", ev)
	}
}

func TestServe(t *testing.T) {
	f := newFixture()
	mux := http.NewServeMux()
	f.d.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(path string) (*http.Response, string) {
		res, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return res, string(b)
	}
	for _, p := range []string{"/", "/?k=nope", EventsPath, StatusPath + "?k=kex"} {
		if res, _ := get(p); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: %d", p, res.StatusCode)
		}
	}
	res, page := get("/?k=key")
	if res.StatusCode != http.StatusOK || !strings.Contains(page, `<meta name="veil-key" content="key">`) || !strings.Contains(page, `id="circuits"`) || !strings.Contains(page, `<svg id="bandwidth"`) {
		t.Fatalf("page: %d\n%s", res.StatusCode, page)
	}
	csp := res.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") || res.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Fatalf("headers %v", res.Header)
	}
	res, body := get(StatusPath + "?k=key")
	var ev Event
	if err := json.Unmarshal([]byte(body), &ev); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("status: %d %s", res.StatusCode, body)
	}
	for _, p := range []string{"app.js", "style.css"} {
		if res, body := get(StaticPath + p); res.StatusCode != http.StatusOK || len(body) < 500 {
			t.Errorf("%s: %d", p, res.StatusCode)
		}
	}
	// The page's markup has the ids the script fills.
	_, js := get(StaticPath + "app.js")
	for _, id := range []string{"circuits", "transfers", "peers", "chart-in", "chart-out", "ordbs", "metrics"} {
		if !strings.Contains(js, `"`+id+`"`) || !strings.Contains(page, `id="`+id+`"`) {
			t.Errorf("id %q not in both the page and the script", id)
		}
	}
}
