package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"veil/circuits"
	"veil/cmd/veil/internal/config"
	"veil/cmd/veil/internal/gateway"
	"veil/ordb"
	"veil/proto"
)

// The local API: JSON under /api/v1/ on a loopback address, for the veil
// command and other local programs. Every request carries the cookie the
// node writes to its data directory (mode 0600) at start, in the
// CookieHeader header; without it, or with a wrong one, the answer is 401.
// The server answers only loopback Host names and refuses requests other
// sites' pages make (gateway.Guard).
//
//	GET  /api/v1/status            Status
//	POST /api/v1/put[?pseudonym=NAME]  body: the content (Content-Type: its MIME type) -> PutResult
//	POST /api/v1/get/{hash_name}   fetches; answers NDJSON Event lines until done
//	GET  /api/v1/content/{hash_name}  the bytes of a content the node holds
//	POST /api/v1/put/live          body: a live stream, until it ends -> NDJSON LiveEvent lines (the hash_name first)
//	POST /api/v1/stream/{hash_name}   starts the gateway's fetch; answers NDJSON StreamEvent lines
//	GET  /content/{hash_name}?k=TOKEN the streaming gateway (package gateway): Range requests while it downloads
//	GET  /api/v1/debug/providers/{hash_name}  Providers: a DHT lookup BY THIS NODE (it tells the DHT the node asked)
//	GET  /api/v1/debug/memory      Memory, after a garbage collection
//	GET  /api/v1/debug/pprof/heap  the heap profile (go tool pprof)
//	GET  /api/v1/debug/pprof/profile?seconds=N  a CPU profile of N (1..60) seconds
const CookieHeader = "X-Veil-Cookie"

// Status is the node's state as /api/v1/status gives it.
type Status struct {
	ID         string           `json:"id"`
	Addr       string           `json:"addr,omitempty"`
	BridgeLine string           `json:"bridge_line,omitempty"`
	Flags      uint8            `json:"flags"`
	Links      int              `json:"links"`
	Circuits   []CircuitStatus  `json:"circuits"`
	Ready      float64          `json:"tunnels_ready"`
	PoolError  string           `json:"pool_error,omitempty"`
	Joined     int              `json:"joined_circuits"`
	DHTSize    int              `json:"dht_table_size"`
	DHTRecords int              `json:"dht_records"`
	Directory  int              `json:"directory_size"`
	Published  int              `json:"published"`
	Transfers  []TransferStatus `json:"transfers"`
	ORDB       *ORDBStatus      `json:"ordb,omitempty"` // nil: not an ORDB
	// Budget is what the memory and CREATE2 budgets did; Guards are the
	// first hops of the node's circuits (docs/ARCHITECTURE.md, "Budgets
	// and limits").
	Budget circuits.BudgetStats `json:"budget"`
	Guards []string             `json:"guards"`
}

// ORDBStatus is what the node's ORDB service and Peer did.
type ORDBStatus struct {
	// ORDBs are the node's own ORDBs its Peer holds circuits to.
	ORDBs []string `json:"ordbs"`
	// ORDBsEver are all the ORDBs the Peer built a circuit to (and so
	// advertised to) since the node started.
	ORDBsEver []string        `json:"ordbs_ever"`
	Relay     ordb.RelayStats `json:"relay"`
	Peer      ordb.PeerStats  `json:"peer"`
}

// Providers answers /api/v1/debug/providers: the ORDBs the DHT's
// provider records name.
type Providers struct {
	ORDBs []string `json:"ordbs"`
}

// CircuitStatus is one of the pool's circuits.
type CircuitStatus struct {
	ID        uint64   `json:"id"`
	Path      []string `json:"path"`
	BytesSent uint64   `json:"bytes_sent"`
	BytesRecv uint64   `json:"bytes_recv"`
	Age       float64  `json:"age_seconds"`   // since its build started
	Use       string   `json:"use,omitempty"` // what it is for (the dashboard's list)
}

// PutResult answers /api/v1/put.
type PutResult struct {
	HashName string `json:"hash_name"`
	Size     uint64 `json:"size"`
	// Advertised counts the node's own ORDBs told about the content
	// (they store the provider records, naming themselves).
	Advertised int    `json:"advertised_to"`
	Warning    string `json:"warning,omitempty"`
}

// Event is one line of /api/v1/get's answer.
type Event struct {
	Held    uint64 `json:"chunks_held"`
	Total   uint64 `json:"chunks_total"`
	Size    uint64 `json:"size"`
	Resumed uint64 `json:"chunks_resumed"`
	Attempt int    `json:"attempt"`
	// Rates are the downloading circuits' rates, bytes per second.
	Rates []float64 `json:"circuit_rates,omitempty"`
	// Lost counts circuits that failed or stalled and were replaced.
	Lost  int    `json:"circuits_lost,omitempty"`
	Done  bool   `json:"done,omitempty"`
	Error string `json:"error,omitempty"`
	// NotFound is set with Error when no provider was found.
	NotFound bool `json:"not_found,omitempty"`
}

// Memory is the node process's memory as /api/v1/debug/memory gives it,
// taken right after a garbage collection so that the heap figures count
// live objects only.
type Memory struct {
	HeapAlloc  uint64 `json:"heap_alloc"`  // bytes of live heap objects
	HeapInuse  uint64 `json:"heap_inuse"`  // bytes of heap spans in use
	StackInuse uint64 `json:"stack_inuse"` // bytes of goroutine stacks
	Sys        uint64 `json:"sys"`         // bytes obtained from the OS
	Goroutines int    `json:"goroutines"`
	RSS        uint64 `json:"rss"` // resident set (VmRSS), 0 where /proc is missing
}

// readMemory collects Memory.
func readMemory() Memory {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return Memory{HeapAlloc: ms.HeapAlloc, HeapInuse: ms.HeapInuse, StackInuse: ms.StackInuse,
		Sys: ms.Sys, Goroutines: runtime.NumGoroutine(), RSS: ProcessRSS(os.Getpid())}
}

// ProcessRSS is the resident set of process pid in bytes, from
// /proc/PID/status (VmRSS); 0 when it cannot be read.
func ProcessRSS(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || f[1] != "kB" {
				return 0
			}
			kb, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// Status returns a snapshot of the node.
func (n *Node) Status(ctx context.Context) Status {
	st := Status{ID: n.id.ID.String(), BridgeLine: n.BridgeLine(), Flags: n.cfg.Load().Roles.Flags(),
		Links: n.links.Len(), Ready: n.pool.TunnelsReady(), Joined: n.sw.Joined(), Directory: n.dir.Len(),
		Circuits: []CircuitStatus{}, Transfers: []TransferStatus{}, Budget: n.sw.BudgetStats(), Guards: []string{}}
	for _, id := range n.guards.IDs() {
		st.Guards = append(st.Guards, id.String())
	}
	if n.addr.IsValid() {
		st.Addr = n.addr.String()
	}
	if err := n.pool.LastError(); err != nil {
		st.PoolError = err.Error()
	}
	for _, c := range n.pool.FindCircuits() {
		st.Circuits = append(st.Circuits, circuitStatus(c, n.now()))
	}
	if ds, err := n.dht.Stats(ctx); err == nil {
		st.DHTSize, st.DHTRecords = ds.TableSize, ds.Records
	}
	now := n.now()
	n.mu.Lock()
	st.Published = n.published
	for name, t := range n.transfers {
		st.Transfers = append(st.Transfers, t.status(name, now))
	}
	n.mu.Unlock()
	if n.relay != nil {
		o := &ORDBStatus{ORDBs: []string{}, ORDBsEver: []string{}, Relay: n.relay.Stats(), Peer: n.peer.Stats()}
		for _, id := range n.peerCircs.ORDBs() {
			o.ORDBs = append(o.ORDBs, id.String())
		}
		for _, id := range n.peerCircs.Ever() {
			o.ORDBsEver = append(o.ORDBsEver, id.String())
		}
		st.ORDB = o
	}
	slices.SortFunc(st.Transfers, func(a, b TransferStatus) int { return strings.Compare(a.HashName, b.HashName) })
	return st
}

type apiServer struct {
	addr   string
	cookie string
	srv    *http.Server
	done   chan struct{}
	files  []string
	gw     *gateway.Handler // the streaming gateway (gateway.go)
}

// startAPI listens on addr, writes the cookie and the address to the data
// directory, and serves until close.
func startAPI(n *Node, addr string) (*apiServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("local API: %w", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		ln.Close()
		return nil, err
	}
	a := &apiServer{addr: ln.Addr().String(), cookie: hex.EncodeToString(raw[:]), done: make(chan struct{})}
	for name, body := range map[string]string{CookieFile: a.cookie, APIAddrFile: a.addr} {
		path := filepath.Join(n.dataDir, name)
		if err := writeFile0600(path, body+"\n"); err != nil {
			ln.Close()
			return nil, fmt.Errorf("local API: %w", err)
		}
		a.files = append(a.files, path)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Status(r.Context()))
	})
	mux.HandleFunc("POST /api/v1/put", func(w http.ResponseWriter, r *http.Request) {
		mime := r.Header.Get("Content-Type")
		if mime == "" || len(mime) > 255 {
			mime = "application/octet-stream"
		}
		ctx, cancel := n.requestContext(r)
		defer cancel()
		ps := r.URL.Query().Get("pseudonym")
		if ps == "" {
			ps = n.cfg.Load().Pseudonym
		}
		p, err := n.PublishAs(ctx, ps, mime, r.Body)
		if err != nil && p.Size == 0 && p.Name == (proto.HashName{}) {
			code := http.StatusInternalServerError
			var ce *config.Error
			switch {
			case errors.Is(err, ErrNotORDB):
				code = http.StatusConflict
			case errors.As(err, &ce):
				code = http.StatusBadRequest
			}
			writeError(w, code, err)
			return
		}
		res := PutResult{HashName: p.Name.String(), Size: p.Size, Advertised: p.Advertised}
		if err != nil {
			res.Warning = err.Error()
		}
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("POST /api/v1/get/{hash}", func(w http.ResponseWriter, r *http.Request) {
		name, ok := hashArg(w, r)
		if !ok {
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		enc := json.NewEncoder(w)
		fl, _ := w.(http.Flusher)
		last := time.Time{}
		ctx, cancel := n.requestContext(r)
		defer cancel()
		_, err := n.Fetch(ctx, name, func(p Progress) {
			if now := time.Now(); now.Sub(last) >= 200*time.Millisecond || p.Held == p.Total {
				last = now
				_ = enc.Encode(Event{Held: p.Held, Total: p.Total, Size: p.Size, Resumed: p.Resumed, Attempt: p.Attempt, Rates: p.Rates, Lost: p.Lost})
				if fl != nil {
					fl.Flush()
				}
			}
		})
		if err != nil {
			_ = enc.Encode(Event{Error: err.Error(), NotFound: errors.Is(err, ErrNotFound)})
			return
		}
		_ = enc.Encode(Event{Done: true})
	})
	registerTorrentAPI(mux, n)
	mux.HandleFunc("GET /api/v1/content/{hash}", func(w http.ResponseWriter, r *http.Request) {
		name, ok := hashArg(w, r)
		if !ok {
			return
		}
		rd, err := n.Open(r.Context(), name)
		if err != nil {
			writeError(w, http.StatusNotFound, err)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		var rs io.ReadSeeker = rd
		if rd.Size() >= 0 {
			// Static content the node holds whole: no Read waits. (A
			// live stream's reads do wait for chunks; they stay as they
			// are, not to hold back what arrived.)
			rs = fillReader{rd}
		}
		http.ServeContent(w, r, "", time.Time{}, rs)
	})
	mux.HandleFunc("GET /api/v1/debug/providers/{hash}", func(w http.ResponseWriter, r *http.Request) {
		name, ok := hashArg(w, r)
		if !ok {
			return
		}
		ctx, cancel := n.requestContext(r)
		defer cancel()
		res, err := n.dht.FindValue(ctx, name)
		if err != nil {
			writeError(w, http.StatusBadGateway, err)
			return
		}
		p := Providers{ORDBs: []string{}}
		for _, rec := range res.Records {
			p.ORDBs = append(p.ORDBs, rec.ORDB.String())
		}
		writeJSON(w, http.StatusOK, p)
	})
	mux.HandleFunc("GET /api/v1/debug/memory", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, readMemory())
	})
	mux.HandleFunc("GET /api/v1/debug/pprof/heap", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		_ = pprof.Lookup("heap").WriteTo(w, 0)
	})
	mux.HandleFunc("GET /api/v1/debug/pprof/profile", func(w http.ResponseWriter, r *http.Request) {
		secs, err := strconv.Atoi(r.URL.Query().Get("seconds"))
		if err != nil || secs < 1 || secs > 60 {
			writeError(w, http.StatusBadRequest, errors.New("seconds: want 1..60"))
			return
		}
		var buf bytes.Buffer
		if err := pprof.StartCPUProfile(&buf); err != nil {
			writeError(w, http.StatusConflict, err) // one profile at a time
			return
		}
		select {
		case <-time.After(time.Duration(secs) * time.Second):
		case <-r.Context().Done():
		}
		pprof.StopCPUProfile()
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(buf.Bytes())
	})
	a.gw = gateway.New(gateway.Config{Source: gatewaySource{n}, LookupTimeout: gatewayLookupTimeout, Log: n.log})
	mux.Handle("GET "+gateway.ContentPrefix+"{hash}", a.gw) // GET patterns take HEAD too
	mux.HandleFunc("POST /api/v1/put/live", func(w http.ResponseWriter, r *http.Request) { servePutLive(n, w, r) })
	mux.HandleFunc("POST /api/v1/stream/{hash}", func(w http.ResponseWriter, r *http.Request) { a.serveStream(n, w, r) })
	n.addViews(mux, a) // the dashboard and /metrics (dashboard.go): GETs that check the view key
	guard := gateway.Guard{Cookie: a.cookie, Header: CookieHeader}
	a.srv = &http.Server{Handler: guard.Wrap(mux), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(a.done)
		_ = a.srv.Serve(ln)
	}()
	return a, nil
}

// requestContext ends with the request or when the node stops, so that
// stopping does not wait for long publications or fetches (which resume).
func (n *Node) requestContext(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(n.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

func (a *apiServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = a.srv.Shutdown(ctx)
	_ = a.srv.Close()
	<-a.done
	for _, f := range a.files {
		_ = os.Remove(f)
	}
}

// fillReader fills each Read as far as it can: a chunkstore.Reader
// returns one 498-byte chunk per Read, and the HTTP server writes what each
// Read gives, so without it the content goes out in tiny writes.
type fillReader struct{ io.ReadSeeker }

func (f fillReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := f.ReadSeeker.Read(p[n:])
		n += m
		if err != nil {
			if n > 0 && err == io.EOF {
				return n, nil // EOF again on the next Read
			}
			return n, err
		}
	}
	return n, nil
}

func hashArg(w http.ResponseWriter, r *http.Request) (proto.HashName, bool) {
	name, err := proto.ParseHashName(r.PathValue("hash"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return name, false
	}
	return name, true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

// writeFile0600 replaces path with body, readable by the owner only.
func writeFile0600(path, body string) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(f, body); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
