package node

import (
	"context"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"veil/chunkstore"
	"veil/circuits"
	"veil/kademlia"
	"veil/window"
)

// Prometheus metrics, served at /metrics in the text format. The
// libraries keep plain atomic counters (Stats methods); the node reads
// them when scraped, so that no library depends on a metrics package.
// Only what happens as events (a circuit's build time) is recorded as it
// happens. Each node has its own metrics.Set: several nodes can run in
// one process (veil testnet).
//
// Metric names are listed in docs/ARCHITECTURE.md ("Metrics").

func init() {
	// # HELP and # TYPE lines: counters are typed as such for scrapers.
	metrics.ExposeMetadata(true)
}

// buildBuckets are the upper bounds of the circuit build time histogram,
// in seconds: a 3-hop build on a LAN takes milliseconds, through slow
// relays seconds.
var buildBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// nodeMetrics are a node's metrics.
type nodeMetrics struct {
	n   *Node
	set *metrics.Set

	buildSeconds  *metrics.PrometheusHistogram
	built, failed *metrics.Counter

	mu            sync.Mutex           // guards launched, relayedClosed and relayedMax
	launched      map[uint64]time.Time // origin circuits being built, by handle
	relayedClosed uint64               // relay cells of closed circuits of others
	relayedMax    uint64               // the highest relayed-cells total reported

	// The window's counters, added up as each fetch attempt ends.
	winAsked, winReceived, winDups atomic.Uint64
	// The last finished transfer's efficiency (math.Float64bits; NaN
	// before the first), and how many transfers finished with one.
	winEff      atomic.Uint64
	winFinished atomic.Uint64
	liveSkipped atomic.Uint64 // live chunks jumped over: the fetch fell behind what the publisher keeps
	// Facilitator fetches, by outcome (countFacilitatorFetch).
	facOK, facFailed atomic.Uint64
}

// startMetrics makes the node's metrics and subscribes them to the
// switch's circuit events. Call it once the switch exists.
func (n *Node) startMetrics() {
	m := &nodeMetrics{n: n, set: metrics.NewSet(), launched: map[uint64]time.Time{}}
	m.winEff.Store(math.Float64bits(math.NaN()))
	m.buildSeconds = m.set.NewPrometheusHistogramExt("veil_circuit_build_seconds", buildBuckets)
	m.built = m.set.NewCounter("veil_circuits_built_total")
	m.failed = m.set.NewCounter("veil_circuits_failed_total")
	m.set.RegisterMetricsWriter(m.write)
	n.metrics = m
	n.sw.Subscribe(m.onEvent)
}

// onEvent records circuit builds. It runs in circuit goroutines and must
// not block: a map under a short lock.
func (m *nodeMetrics) onEvent(ev circuits.Event) {
	switch ev.Kind {
	case circuits.EventLaunched:
		m.mu.Lock()
		m.launched[ev.Circuit] = ev.At
		m.mu.Unlock()
	case circuits.EventBuilt:
		m.mu.Lock()
		t0, ok := m.launched[ev.Circuit]
		delete(m.launched, ev.Circuit)
		m.mu.Unlock()
		m.built.Inc()
		if ok {
			m.buildSeconds.Update(ev.At.Sub(t0).Seconds())
		}
	case circuits.EventFailed:
		m.mu.Lock()
		delete(m.launched, ev.Circuit)
		m.mu.Unlock()
		m.failed.Inc()
	case circuits.EventClosed:
		m.mu.Lock()
		delete(m.launched, ev.Circuit)
		if !ev.Origin {
			m.relayedClosed += ev.Stats.CellsSent + ev.Stats.CellsRecv
		}
		m.mu.Unlock()
	}
}

// countWindow adds a finished fetch attempt's window counters.
func (m *nodeMetrics) countWindow(st window.Stats) {
	m.winAsked.Add(st.Asked)
	m.winReceived.Add(st.Received)
	m.winDups.Add(st.Dups)
}

// finishedTransfer records the efficiency of a transfer that finished
// (ordb.Get.Efficiency of the attempt that finished it): what it got over
// what its circuits could carry. 0 (nothing measured) is not recorded.
func (m *nodeMetrics) finishedTransfer(eff float64) {
	if eff > 0 {
		m.winEff.Store(math.Float64bits(eff))
		m.winFinished.Add(1)
	}
}

// countFacilitatorFetch counts one fetch the node's facilitator made
// (err nil: it completed).
func (n *Node) countFacilitatorFetch(err error) {
	if err == nil {
		n.metrics.facOK.Add(1)
	} else {
		n.metrics.facFailed.Add(1)
	}
}

// cellsRelayed is the relay cells of others' circuits this node carried,
// open and closed ones. A circuit closing between the two reads could
// make the sum dip for a moment; a counter must not go down, so it
// reports the highest sum seen.
func (m *nodeMetrics) cellsRelayed() uint64 {
	live := m.n.sw.RelayedStats()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.relayedMax = max(m.relayedMax, m.relayedClosed+live.CellsSent+live.CellsRecv)
	return m.relayedMax
}

// write writes the metrics read from the libraries at scrape time.
func (m *nodeMetrics) write(w io.Writer) {
	n := m.n
	gauge := func(name string, v float64) { metrics.WriteGaugeFloat64(w, name, v) }
	counter := func(name string, v uint64) { metrics.WriteCounterUint64(w, name, v) }

	gauge("veil_links", float64(n.links.Len()))
	in, out := n.links.Traffic()
	counter("veil_link_bytes_received_total", in)
	counter("veil_link_bytes_sent_total", out)

	gauge("veil_circuits_active", float64(len(n.sw.Origins())))
	gauge("veil_circuits_carried", float64(n.sw.Joined()))
	counter("veil_cells_relayed_total", m.cellsRelayed())

	ls := n.dht.LookupStats()
	counterVec(w, "veil_dht_lookups_total", "kind", []string{"find_node", "find_value", "provide", "bootstrap"},
		[]uint64{ls.ByKind[kademlia.OpFindNode], ls.ByKind[kademlia.OpFindValue], ls.ByKind[kademlia.OpProvide], ls.ByKind[kademlia.OpBootstrap]})
	counter("veil_dht_lookup_failures_total", ls.Failed)
	counter("veil_dht_lookup_rounds_total", ls.Rounds)
	counter("veil_dht_lookup_rpcs_total", ls.RPCs)
	ctx, cancel := context.WithTimeout(n.ctx, time.Second)
	if ds, err := n.dht.Stats(ctx); err == nil {
		gauge("veil_dht_table_size", float64(ds.TableSize))
		gauge("veil_dht_records", float64(ds.Records))
	}
	cancel()

	var fails int64
	for _, s := range []*chunkstore.Store{n.cache, n.served} {
		if s != nil {
			fails += s.Stats().VerifyFailures
		}
	}
	counter("veil_chunk_verify_failures_total", uint64(fails))

	asked, recv := m.winAsked.Load(), m.winReceived.Load()
	counter("veil_window_chunks_asked_total", asked)
	counter("veil_window_chunks_received_total", recv)
	counter("veil_window_chunks_duplicate_total", m.winDups.Load())
	gauge("veil_window_efficiency", math.Float64frombits(m.winEff.Load()))
	counter("veil_window_transfers_finished_total", m.winFinished.Load())
	counter("veil_live_chunks_skipped_total", m.liveSkipped.Load())

	counterVec(w, "veil_facilitator_fetches_total", "result", []string{"ok", "failed"}, []uint64{m.facOK.Load(), m.facFailed.Load()})

	n.mu.Lock()
	transfers := len(n.transfers)
	n.mu.Unlock()
	gauge("veil_transfers", float64(transfers))

	if n.relay != nil {
		rs, ps := n.relay.Stats(), n.peer.Stats()
		counter("veil_ordb_queries_total", uint64(rs.Queries))
		counter("veil_ordb_forwards_total", uint64(rs.Forwards))
		counter("veil_ordb_lookups_total", uint64(rs.Lookups))
		counter("veil_ordb_chunks_served_total", uint64(ps.Chunks))
	}
}

// counterVec writes one counter family with a label: its metadata once,
// then a line per value, together as the text format wants.
func counterVec(w io.Writer, family, label string, names []string, values []uint64) {
	metrics.WriteMetadataIfNeeded(w, family, "counter")
	for i, v := range values {
		fmt.Fprintf(w, "%s{%s=%q} %d\n", family, label, names[i], v)
	}
}

// WriteMetrics writes the node's metrics in the Prometheus text format.
// (Not the library's go_* and process_* metrics: in v1.45.0 its
// go_gc_pauses_seconds histogram can give a _count that differs from its
// +Inf bucket, which the test's strict parser rejects.)
func (n *Node) WriteMetrics(w io.Writer) { n.metrics.set.WritePrometheus(w) }
