// Package dashboard is the node's status page: one HTML page, its
// stylesheet and script (embedded: the page loads nothing from elsewhere),
// and a stream of server-sent events, one a second, carrying the node's
// status and the recent link bandwidth that the page draws as an SVG
// chart.
//
// The page and its events show what the node does (its circuits, its
// transfers), so they are served only to requests that Authorized
// accepts; the caller decides how (the node: its cookie, or the view key
// in the address that `veil status` prints). The page embeds the key it
// was opened with, to ask for the events with it.
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"html/template"
	"io/fs"
	"net/http"
	"sync"
	"time"
)

//go:embed static
var static embed.FS

// Paths the dashboard serves.
const (
	PagePath   = "/"
	EventsPath = "/dashboard/events"
	StatusPath = "/dashboard/status"
	StaticPath = "/dashboard/static/"
)

// historyLen bounds the bandwidth samples kept for the chart.
const historyLen = 300

// Config is what a Dashboard shows and who may see it.
type Config struct {
	// Snapshot returns the node's state, sent as JSON in each event's
	// "status".
	Snapshot func(ctx context.Context) any
	// Traffic returns the bytes received and sent so far.
	Traffic func() (in, out uint64)
	// Authorized says whether r may see the node's state.
	Authorized func(r *http.Request) bool
	// Key returns the view key to embed in the page served for r (an
	// authorized request).
	Key func(r *http.Request) string
	// Interval is the time between events (0: one second).
	Interval time.Duration
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Sample is one point of the bandwidth chart: the rates since the
// previous sample.
type Sample struct {
	T   int64   `json:"t"`   // Unix milliseconds
	In  float64 `json:"in"`  // bytes per second received
	Out float64 `json:"out"` // bytes per second sent
}

// Event is the data of one server-sent event.
type Event struct {
	T       int64    `json:"t"` // Unix milliseconds
	Status  any      `json:"status"`
	History []Sample `json:"history"`
	In      uint64   `json:"bytes_in"`
	Out     uint64   `json:"bytes_out"`
}

// Dashboard serves the page and its events; Run samples the bandwidth.
// Safe for concurrent use.
type Dashboard struct {
	cfg     Config
	page    *template.Template
	stopped chan struct{} // closed when Run returns: event streams end

	mu      sync.Mutex // guards the fields below (written by sample)
	last    time.Time  // the last sample's time
	lastIn  uint64
	lastOut uint64
	history []Sample // oldest first, at most historyLen
}

// New returns a dashboard for cfg.
func New(cfg Config) *Dashboard {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	page := template.Must(template.ParseFS(static, "static/index.html"))
	return &Dashboard{cfg: cfg, page: page, stopped: make(chan struct{})}
}

// Register adds the dashboard's routes to mux.
func (d *Dashboard) Register(mux *http.ServeMux) {
	sub, _ := fs.Sub(static, "static")
	files := http.StripPrefix(StaticPath, http.FileServerFS(sub))
	mux.Handle("GET "+StaticPath, headers(files))
	mux.Handle("GET /{$}", headers(http.HandlerFunc(d.servePage)))
	mux.Handle("GET "+EventsPath, headers(http.HandlerFunc(d.serveEvents)))
	mux.Handle("GET "+StatusPath, headers(http.HandlerFunc(d.serveStatus)))
}

// headers: nothing of the page may come from elsewhere, no other site may
// frame it, and its address (which carries the key) goes to nobody as a
// Referer.
func headers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

func (d *Dashboard) servePage(w http.ResponseWriter, r *http.Request) {
	if !d.cfg.Authorized(r) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte("veil: open the dashboard at the address `veil status` prints (it carries the view key).\n"))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = d.page.Execute(w, struct{ Key string }{d.cfg.Key(r)})
}

func (d *Dashboard) serveStatus(w http.ResponseWriter, r *http.Request) {
	if !d.cfg.Authorized(r) {
		http.Error(w, "missing or wrong view key", http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(d.event(r.Context()))
}

// serveEvents streams an event every Interval until the client goes.
func (d *Dashboard) serveEvents(w http.ResponseWriter, r *http.Request) {
	if !d.cfg.Authorized(r) {
		http.Error(w, "missing or wrong view key", http.StatusUnauthorized)
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	for {
		b, err := json.Marshal(d.event(r.Context()))
		if err != nil {
			return
		}
		if _, err := w.Write(append(append([]byte("data: "), b...), '\n', '\n')); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-d.stopped:
			return
		case <-t.C:
		}
	}
}

// Run samples the traffic every Interval until ctx ends, so that the
// chart shows the recent past as soon as the page opens; then it ends the
// event streams (a server shutting down waits for open requests). Call it
// once.
func (d *Dashboard) Run(ctx context.Context) {
	defer close(d.stopped)
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	d.sample()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.sample()
		}
	}
}

// sample adds the rates since the last sample to the history.
func (d *Dashboard) sample() {
	now := d.cfg.Now()
	in, out := d.cfg.Traffic()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.last.IsZero() {
		d.last, d.lastIn, d.lastOut = now, in, out
		return
	}
	dt := now.Sub(d.last)
	if dt <= 0 {
		return
	}
	s := Sample{T: now.UnixMilli(), In: float64(in-d.lastIn) / dt.Seconds(), Out: float64(out-d.lastOut) / dt.Seconds()}
	if len(d.history) == historyLen {
		d.history = append(d.history[:0], d.history[1:]...)
	}
	d.history = append(d.history, s)
	d.last, d.lastIn, d.lastOut = now, in, out
}

// event takes a snapshot.
func (d *Dashboard) event(ctx context.Context) Event {
	in, out := d.cfg.Traffic()
	d.mu.Lock()
	hist := append([]Sample{}, d.history...)
	d.mu.Unlock()
	return Event{T: d.cfg.Now().UnixMilli(), Status: d.cfg.Snapshot(ctx), History: hist, In: in, Out: out}
}
