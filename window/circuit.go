package window

import (
	"math"
	"time"
)

type circState uint8

const (
	spare  circState = iota // known, not downloading
	active                  // one of the Config.Circuits downloading
)

// circuit is what the window knows of one circuit: its outstanding GETs
// and its measurements.
type circuit struct {
	id    CircuitID
	state circState
	added uint64 // order of AddCircuit, for deterministic ties

	gets        []*get // outstanding, in send order
	outstanding int    // chunks asked and not yet received, over gets

	// tm: time to first data. The minimum over two rotating buckets of
	// tmSpan each, so a path that gets slower is noticed within 2 spans,
	// and a GET queued behind others (whose tm includes the wait) does
	// not inflate it.
	tmCur, tmPrev time.Duration
	tmSince       time.Time

	// Rate, in chunks per second: exponentially decayed sums of chunks and
	// seconds of back-to-back arrivals (answers that waited at the ORDB,
	// so the gap between two is transfer time, not idling).
	rk, rt  float64
	rateAt  time.Time
	sampled time.Duration // undecayed total of rt, for the warm-up
	// rLow: from answers that did not queue, the best count / (arrival -
	// GET sent); the rate until back-to-back samples exist. Not a floor
	// after that: one answer let through at a relay's burst would read
	// several times the rate the path keeps up.
	rLow        float64
	lastArrival time.Time

	failures int // failed GETs since its last data
}

const tmSpan = 10 * time.Second

func (c *circuit) tm() time.Duration {
	switch {
	case c.tmCur == 0:
		return c.tmPrev
	case c.tmPrev == 0:
		return c.tmCur
	}
	return min(c.tmCur, c.tmPrev)
}

func (c *circuit) noteTM(tm time.Duration, now time.Time) {
	tm = max(tm, time.Microsecond) // 0 means "none"
	if now.Sub(c.tmSince) >= tmSpan {
		c.tmPrev, c.tmCur, c.tmSince = c.tmCur, 0, now
	}
	if c.tmCur == 0 || tm < c.tmCur {
		c.tmCur = tm
	}
}

// rate is the circuit's estimated rate in chunks per second, 0 if unknown.
func (c *circuit) rate() float64 {
	// Until the samples span rateMinSpan, spread them over it: two
	// answers bunched by jitter must not look like an infinite rate.
	if c.rk > 0 {
		return c.rk / max(c.rt, rateMinSpan)
	}
	return c.rLow
}

const rateMinSpan = 0.02 // seconds

// rateNow is rate, counting the time since the last answer as time without
// data when an answer is overdue (its GET was sent more than tm ago): a
// circuit that slows down or stops shows it at once, not after the decay.
// Time before resumed (the end of a silence of every circuit) does not
// count.
func (c *circuit) rateNow(now, resumed time.Time) float64 {
	if len(c.gets) == 0 || c.rk == 0 {
		return c.rate()
	}
	from := c.lastArrival
	if due := c.gets[0].sent.Add(c.tm()); due.After(from) {
		from = due
	}
	if resumed.After(from) {
		from = resumed
	}
	late := now.Sub(from).Seconds()
	if late <= 0 {
		return c.rate()
	}
	return c.rk / max(c.rt+late, rateMinSpan)
}

// sample adds n chunks that arrived gap after the previous ones.
func (c *circuit) sample(n int, gap time.Duration, now time.Time, halfLife time.Duration) {
	if !c.rateAt.IsZero() {
		f := math.Exp(-now.Sub(c.rateAt).Seconds() / halfLife.Seconds())
		c.rk *= f
		c.rt *= f
	}
	c.rateAt = now
	c.rk += float64(n)
	c.rt += gap.Seconds()
	c.sampled += gap
}

// get is one outstanding GET.
type get struct {
	id     uint64
	c      *circuit
	lo, hi uint64 // chunks asked: [lo, hi); hi - lo <= 64
	got    uint64 // bit i: chunk lo+i arrived
	left   int
	sent   time.Time
	first  time.Time // first data; zero until then
	desc   bool      // the descriptor GET
}
