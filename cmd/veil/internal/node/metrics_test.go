package node

import (
	"bytes"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"veil/circuits"
)

// The circuit events make the build counters and the build time
// histogram: a build's time is from its launch to its end, failures and
// closes forget the launch, and closed relayed circuits add their cells.
func TestMetricsFromEvents(t *testing.T) {
	m := &nodeMetrics{set: metrics.NewSet(), launched: map[uint64]time.Time{}}
	m.buildSeconds = m.set.NewPrometheusHistogramExt("veil_circuit_build_seconds", buildBuckets)
	m.built = m.set.NewCounter("veil_circuits_built_total")
	m.failed = m.set.NewCounter("veil_circuits_failed_total")
	t0 := time.Unix(1000, 0)
	for _, ev := range []circuits.Event{
		{Kind: circuits.EventLaunched, Circuit: 1, Origin: true, At: t0},
		{Kind: circuits.EventLaunched, Circuit: 2, Origin: true, At: t0},
		{Kind: circuits.EventLaunched, Circuit: 3, Origin: true, At: t0},
		{Kind: circuits.EventExtended, Circuit: 1, Origin: true, At: t0.Add(10 * time.Millisecond)},
		{Kind: circuits.EventBuilt, Circuit: 1, Origin: true, At: t0.Add(30 * time.Millisecond)},
		{Kind: circuits.EventFailed, Circuit: 2, Origin: true, At: t0.Add(3 * time.Second)},
		{Kind: circuits.EventBuilt, Circuit: 3, Origin: true, At: t0.Add(2 * time.Second)},
		{Kind: circuits.EventJoined, Circuit: 4, At: t0},
		{Kind: circuits.EventClosed, Circuit: 4, At: t0, Stats: circuits.CircuitStats{CellsSent: 5, CellsRecv: 7}},
		{Kind: circuits.EventClosed, Circuit: 1, Origin: true, At: t0, Stats: circuits.CircuitStats{CellsSent: 100}},
	} {
		m.onEvent(ev)
	}
	var b bytes.Buffer
	m.set.WritePrometheus(&b)
	p, err := parsePromText(b.String())
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	for series, want := range map[string]float64{
		"veil_circuits_built_total":                     2,
		"veil_circuits_failed_total":                    1,
		"veil_circuit_build_seconds_count":              2,
		`veil_circuit_build_seconds_bucket{le="0.025"}`: 0,
		`veil_circuit_build_seconds_bucket{le="0.05"}`:  1,
		`veil_circuit_build_seconds_bucket{le="1"}`:     1,
		`veil_circuit_build_seconds_bucket{le="2.5"}`:   2,
		`veil_circuit_build_seconds_bucket{le="+Inf"}`:  2,
	} {
		if v, ok := p.value(series); !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
		}
	}
	if sum, _ := p.value("veil_circuit_build_seconds_sum"); sum < 2.029 || sum > 2.031 {
		t.Errorf("build seconds sum %v, want 2.03", sum)
	}
	if len(m.launched) != 0 {
		t.Errorf("%d launches remembered after every circuit ended", len(m.launched))
	}
	if m.relayedClosed != 12 {
		t.Errorf("relayed cells of closed circuits %d, want 12 (origin circuits not counted)", m.relayedClosed)
	}
}
