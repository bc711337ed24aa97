package circuits

import (
	"testing"
	"time"
)

// A sender that waits what Take says sends at the rate, after one burst.
func TestTokenBucketRate(t *testing.T) {
	now := time.Unix(1000, 0)
	start := now
	b := NewTokenBucket(8_000_000, 64_000, now)
	const cell = 509
	sent := 0
	for sent < 80_000_000 {
		if d := b.Take(cell, now); d > 0 {
			now = now.Add(d) // the fake clock: wait exactly as asked
		}
		sent += cell
	}
	el := now.Sub(start).Seconds()
	rate := float64(sent-64_000) / el
	if rate < 7_990_000 || rate > 8_010_000 {
		t.Fatalf("rate %.0f B/s over %.2fs, want 8 MB/s", rate, el)
	}
}

// The burst is available at once, then nothing more until time passes;
// idle time refills up to the burst and no further.
func TestTokenBucketBurst(t *testing.T) {
	now := time.Unix(1000, 0)
	b := NewTokenBucket(1000, 500, now)
	if d := b.Take(500, now); d != 0 {
		t.Fatalf("burst: wait %v", d)
	}
	if d := b.Take(100, now); d != 100*time.Millisecond {
		t.Fatalf("past the burst: wait %v, want 100ms", d)
	}
	now = now.Add(time.Hour) // long idle: refills to the burst only
	if d := b.Take(500, now); d != 0 {
		t.Fatalf("after idle: wait %v", d)
	}
	if d := b.Take(1, now); d <= 0 {
		t.Fatalf("idle time must not store more than the burst: wait %v", d)
	}
}
