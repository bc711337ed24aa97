package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// Not on a terminal, progress is a plain line every 10%, the resumed
// chunks and circuit changes are said once, and the end is reported.
func TestProgressLines(t *testing.T) {
	var b bytes.Buffer
	p := newProgressBar(&b)
	const total, size = 1000, 1000 * 498
	p.update(200, total, size, 200, 1, nil, 0)
	for held := uint64(200); held <= 600; held += 25 {
		p.update(held, total, size, 200, 1, []float64{1.2e6, 0.9e6, 1.1e6, 1e6, 0.4e6}, 0)
	}
	p.update(640, total, size, 200, 1, nil, 1)
	p.update(650, total, size, 200, 2, nil, 0)
	p.update(1000, total, size, 200, 2, nil, 0)
	p.finish(nil)
	out := b.String()
	for _, want := range []string{"resuming: 200 of 1000 chunks already held", "get:  20%", "get:  60%", "[5 circuits 1.2 0.9 1.1 1.0 0.4 MB/s]", "circuit lost; resuming through a new circuit (1 replaced) with 640 of 1000", "attempt 2) with 650 of 1000", "get: 100%", "get: done"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "get:  30%"); n != 1 {
		t.Errorf("30%% said %d times:\n%s", n, out)
	}
	if strings.Contains(out, "\r") {
		t.Errorf("redraws on a non-terminal:\n%q", out)
	}
	var e bytes.Buffer
	q := newProgressBar(&e)
	q.update(1, 10, 4980, 0, 1, nil, 0)
	q.finish(errors.New("boom"))
	if strings.Contains(e.String(), "resuming") || strings.Contains(e.String(), "done") {
		t.Errorf("fresh failed transfer: %q", e.String())
	}
}
