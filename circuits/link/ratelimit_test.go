package link

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"veil/proto"
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

// A node's WriteLimit paces what all its links write together, in the
// synctest bubble's fake time: 2 MB over two links limited to 1 MB/s with
// a 64 KB burst take (2 MB - 64 KB) / 1 MB/s, however the links share it;
// the same cells from an unlimited node arrive at once.
func TestWriteLimitPacesAllLinks(t *testing.T) {
	const perLink = 1 << 20 / proto.CellSize * proto.CellSize // ~1 MiB of whole cells
	for _, limited := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			cfg := testConfig()
			if limited {
				cfg.WriteLimit = NewWriteLimit(1<<20, 64<<10)
			}
			src := newPipeNode(t, cfg)
			var mu sync.Mutex
			got, last := 0, time.Time{}
			sinks := []*pipeNode{newPipeNode(t, testConfig()), newPipeNode(t, testConfig())}
			for _, s := range sinks {
				s.m.SetHandlers(Handlers{Cell: func(l Conn, c *proto.Cell) {
					mu.Lock()
					got += proto.CellSize
					last = time.Now()
					mu.Unlock()
					proto.PutCell(c)
				}})
			}
			start := time.Now()
			var wg sync.WaitGroup
			for _, s := range sinks {
				dl, _ := pipeLink(t, src, s)
				wg.Go(func() {
					for range perLink / proto.CellSize {
						if err := dl.SendCell(makeCell(1, proto.CmdRelay, 0)); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			for deadline := start.Add(10 * time.Second); ; {
				synctest.Wait()
				mu.Lock()
				done := got >= 2*perLink
				mu.Unlock()
				if done || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond) // fake time: lets the writers' pacing run
			}
			mu.Lock()
			defer mu.Unlock()
			if got != 2*perLink {
				t.Fatalf("limited %v: %d of %d bytes arrived", limited, got, 2*perLink)
			}
			el := last.Sub(start).Seconds()
			want := 0.0
			if limited {
				want = float64(2*perLink-64<<10) / (1 << 20)
			}
			t.Logf("limited %v: %d bytes in %.3f s of fake time", limited, got, el)
			if el < want-0.01 || el > want+0.05 {
				t.Fatalf("limited %v: %d bytes took %.3f s of fake time, want %.3f s", limited, got, el, want)
			}
		})
	}
}

// A cell sent on one link of a limited node waits for at most a piece of
// what another link queued before it, not for that link's whole queue: a
// relay's SENDMEs and queries, going one way, pass through the same bucket
// as the bulk going the other way. At 1 MB/s, 256 KB queued on one link
// would hold a cell on the other for ~200 ms if the writer took it from
// the bucket at once; pieces of pacePiece (16 KiB) hold it ~16-32 ms.
func TestWriteLimitCellOvertakesQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.WriteLimit = NewWriteLimit(1<<20, 64<<10)
		src := newPipeNode(t, cfg)
		bulk, ctl := newPipeNode(t, testConfig()), newPipeNode(t, testConfig())
		var mu sync.Mutex
		var ctlAt time.Time
		bulk.m.SetHandlers(Handlers{Cell: func(l Conn, c *proto.Cell) { proto.PutCell(c) }})
		ctl.m.SetHandlers(Handlers{Cell: func(l Conn, c *proto.Cell) {
			mu.Lock()
			ctlAt = time.Now()
			mu.Unlock()
			proto.PutCell(c)
		}})
		bl, _ := pipeLink(t, src, bulk)
		cl, _ := pipeLink(t, src, ctl)
		// Spend the burst, then queue a full send queue at once.
		n := (64<<10)/proto.CellSize + cfg.SendQueueBytes/proto.CellSize
		go func() {
			for range n {
				if err := bl.SendCell(makeCell(1, proto.CmdRelay, 0)); err != nil {
					return
				}
			}
		}()
		synctest.Wait()
		start := time.Now()
		if err := cl.SendCell(makeCell(2, proto.CmdRelay, 1)); err != nil {
			t.Fatal(err)
		}
		for deadline := start.Add(5 * time.Second); time.Now().Before(deadline); {
			synctest.Wait()
			mu.Lock()
			at := ctlAt
			mu.Unlock()
			if !at.IsZero() {
				wait := at.Sub(start)
				t.Logf("the cell waited %v behind %d queued bytes", wait, cfg.SendQueueBytes)
				if want := 50 * time.Millisecond; wait > want {
					t.Fatalf("the cell waited %v, want at most %v (a few 16 KiB pieces at 1 MB/s)", wait, want)
				}
				return
			}
			time.Sleep(time.Millisecond) // fake time
		}
		t.Fatal("the cell never arrived")
	})
}

// Set changes a running limit: the new rate paces what follows, and
// tokens beyond the new burst are gone.
func TestWriteLimitSet(t *testing.T) {
	w := NewWriteLimit(1<<20, 1<<20)
	now := time.Now()
	if d := w.reserve(1<<20, now); d != 0 {
		t.Fatalf("a full bucket made the first MiB wait %v", d)
	}
	w.Set(64<<10, 64<<10) // 64 KiB/s: the next 64 KiB take a second, not 1/16
	if d := w.reserve(64<<10, now); d < 900*time.Millisecond || d > 1100*time.Millisecond {
		t.Fatalf("after Set(64 KiB/s), 64 KiB more wait %v, want about 1 s", d)
	}
	w2 := NewWriteLimit(1<<20, 1<<20)
	w2.Set(1<<20, 64<<10) // a smaller burst drops the tokens above it
	if d := w2.reserve(128<<10, time.Now()); d <= 0 {
		t.Fatal("128 KiB went at once through a 64 KiB burst")
	}
}
