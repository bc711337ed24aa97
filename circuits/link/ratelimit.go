package link

import (
	"sync"
	"time"
)

// TokenBucket limits a byte rate: Rate bytes per second on average, bursts
// of at most Burst bytes. WriteLimit shares one between a node's links
// (relay_bandwidth_rate). It holds no clock: Take is given the time,
// and says how long the caller must wait, so a fake clock tests it and the
// caller decides how to wait. Not safe for concurrent use.
type TokenBucket struct {
	rate   float64 // bytes per second
	burst  float64
	tokens float64 // may go negative: bytes taken ahead of the rate
	last   time.Time
}

// NewTokenBucket returns a full bucket for rate bytes per second with
// bursts of burst bytes (at least one cell's worth is sensible), at now.
func NewTokenBucket(rate, burst int, now time.Time) *TokenBucket {
	return &TokenBucket{rate: float64(max(rate, 1)), burst: float64(max(burst, 1)), tokens: float64(max(burst, 1)), last: now}
}

// NewRateBucket is NewTokenBucket for a rate that may be below one per
// second (a bucket of events rather than bytes: CREATE2s a link may ask).
func NewRateBucket(rate float64, burst int, now time.Time) *TokenBucket {
	return &TokenBucket{rate: max(rate, 1e-9), burst: float64(max(burst, 1)), tokens: float64(max(burst, 1)), last: now}
}

// TryTake takes n at now if the bucket holds them and reports whether it
// did; a refusal takes nothing.
func (b *TokenBucket) TryTake(n int, now time.Time) bool {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
		b.last = now
	}
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true
}

// Take takes n bytes at now and returns how long the caller must wait
// before sending them so that the rate holds (0: send at once). The bytes
// are counted whether or not the caller waits.
func (b *TokenBucket) Take(n int, now time.Time) time.Duration {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
		b.last = now
	}
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}

// WriteLimit is a node-wide limit on the bytes its links write, the
// relay_bandwidth_rate of a node's config (Tor's RelayBandwidthRate): every
// link's writer takes its batch's bytes from it before writing them, and
// waits when the bucket is short. Keepalive padding is not counted. Safe
// for concurrent use.
type WriteLimit struct {
	mu sync.Mutex
	b  *TokenBucket
}

// NewWriteLimit allows rate bytes per second with bursts of burst bytes.
func NewWriteLimit(rate, burst int) *WriteLimit {
	return &WriteLimit{b: NewTokenBucket(rate, burst, time.Now())}
}

// Set changes the rate and the burst (relay_bandwidth_rate changed while
// the node runs): what was earned at the old rate stays, up to the new
// burst.
func (w *WriteLimit) Set(rate, burst int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Take(0, time.Now())
	w.b.rate, w.b.burst = float64(max(rate, 1)), float64(max(burst, 1))
	w.b.tokens = min(w.b.tokens, w.b.burst)
}

// reserve takes n bytes at now and says how long to wait before writing.
func (w *WriteLimit) reserve(n int, now time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Take(n, now)
}
