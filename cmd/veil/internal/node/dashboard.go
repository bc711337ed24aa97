package node

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"veil/circuits"
	"veil/cmd/veil/internal/dashboard"
	"veil/cmd/veil/internal/gateway"
	"veil/proto"
)

// The dashboard at / and the metrics at /metrics are read-only views of
// the node. A browser cannot send the cookie header when it opens a page,
// so they also accept the view key: derived from the cookie, given in the
// address `veil node` and `veil status` print (?k=KEY). The view key lets
// one see the node, never act on it (/api/ still wants the cookie). The
// page embeds the key to read its events.

// MetricsPath is where the Prometheus metrics are served.
const MetricsPath = "/metrics"

// ViewKey is the dashboard's view key for a node whose cookie is cookie.
func ViewKey(cookie string) string {
	m := hmac.New(sha256.New, []byte(cookie))
	m.Write([]byte("veil dashboard view key"))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// DashboardURL is the dashboard's address with its view key, for the node
// at base (http://127.0.0.1:7780) whose cookie is cookie.
func DashboardURL(base, cookie string) string {
	return strings.TrimSuffix(base, "/") + "/?k=" + ViewKey(cookie)
}

// ContentURL is the gateway address of a content at this node, with its
// capability token ("" when the local API is off).
func (n *Node) ContentURL(name proto.HashName) string {
	if n.api == nil {
		return ""
	}
	return gateway.URL(n.api.addr, n.api.cookie, name)
}

// DashboardURLOf is the dashboard's address of the node running on
// dataDir, from the files its local API wrote there ("" if there are
// none).
func DashboardURLOf(dataDir string) string {
	cookie, err1 := os.ReadFile(filepath.Join(dataDir, CookieFile))
	addr, err2 := os.ReadFile(filepath.Join(dataDir, APIAddrFile))
	if err1 != nil || err2 != nil {
		return ""
	}
	return DashboardURL("http://"+strings.TrimSpace(string(addr)), strings.TrimSpace(string(cookie)))
}

// DashboardURL is the address of the node's dashboard, view key included
// ("" when the local API is off).
func (n *Node) DashboardURL() string {
	if n.api == nil {
		return ""
	}
	return DashboardURL("http://"+n.api.addr, n.api.cookie)
}

// viewAuthorized is the one check of the read-only views: the cookie (in
// CookieHeader, or as "Authorization: Bearer COOKIE", which Prometheus
// sends from a credentials_file), or the view key (?k=).
func (a *apiServer) viewAuthorized(r *http.Request) bool {
	eq := func(got, want string) bool {
		return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
	}
	bearer, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return eq(r.Header.Get(CookieHeader), a.cookie) || eq(strings.TrimSpace(bearer), a.cookie) ||
		eq(r.URL.Query().Get("k"), ViewKey(a.cookie))
}

// DashboardView is what the dashboard shows: the status, and every
// circuit of the node's own (not only the pool's), with what it is for.
type DashboardView struct {
	Status
	Own   []CircuitStatus `json:"own_circuits"`
	Peers []LinkStatus    `json:"peers"`
}

// LinkStatus is one open link.
type LinkStatus struct {
	ID      string `json:"id"`
	Addr    string `json:"addr"`
	Inbound bool   `json:"inbound"`
}

// dashboardView takes a DashboardView.
func (n *Node) dashboardView(ctx context.Context) DashboardView {
	v := DashboardView{Status: n.Status(ctx), Own: []CircuitStatus{}, Peers: []LinkStatus{}}
	for _, p := range n.links.Peers() {
		v.Peers = append(v.Peers, LinkStatus{ID: p.ID.String(), Addr: p.Addr.String(), Inbound: p.Inbound})
	}
	pool := map[uint64]bool{}
	for _, c := range n.pool.FindCircuits() {
		pool[c.ID()] = true
	}
	peer := map[uint64]bool{}
	if n.peerCircs != nil {
		for _, c := range n.peerCircs.FindCircuits() {
			peer[c.ID()] = true
		}
	}
	now := n.now()
	for _, c := range n.sw.Origins() {
		cs := circuitStatus(c, now)
		switch {
		case pool[c.ID()]:
			cs.Use = "pool"
		case peer[c.ID()]:
			cs.Use = "to own ORDB"
		default:
			cs.Use = "fetch or relay"
		}
		v.Own = append(v.Own, cs)
	}
	return v
}

// addViews registers the dashboard and the metrics on mux.
func (n *Node) addViews(mux *http.ServeMux, a *apiServer) {
	d := dashboard.New(dashboard.Config{
		Snapshot:   func(ctx context.Context) any { return n.dashboardView(ctx) },
		Traffic:    n.links.Traffic,
		Authorized: a.viewAuthorized,
		Key:        func(*http.Request) string { return ViewKey(a.cookie) },
		Now:        n.now,
	})
	d.Register(mux)
	n.wg.Add(1) // Close waits for it after ending n.ctx
	go func() {
		defer n.wg.Done()
		d.Run(n.ctx)
	}()
	mux.HandleFunc("GET "+MetricsPath, func(w http.ResponseWriter, r *http.Request) {
		if !a.viewAuthorized(r) {
			http.Error(w, "missing or wrong cookie: send the content of "+CookieFile+" as \"Authorization: Bearer COOKIE\" or in the "+CookieHeader+" header", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		n.WriteMetrics(w)
	})
}

// circuitStatus describes one of our circuits.
func circuitStatus(c *circuits.Circuit, now time.Time) CircuitStatus {
	cs := CircuitStatus{ID: c.ID(), Age: now.Sub(c.Born()).Seconds()}
	for _, d := range c.Path() {
		cs.Path = append(cs.Path, d.ID.String())
	}
	s := c.Stats()
	cs.BytesSent, cs.BytesRecv = s.BytesSent, s.BytesRecv
	return cs
}
