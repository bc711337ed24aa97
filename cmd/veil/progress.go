package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"veil/proto"
)

// progressBar shows a transfer's progress: a redrawn bar with bytes, rate
// and ETA on a terminal, a plain line every 10% otherwise (logs, pipes).
type progressBar struct {
	w        io.Writer
	term     bool
	start    time.Time
	base     uint64 // chunks held when the transfer started (not counted in the rate)
	lastDraw time.Time
	lastTen  int
	said     bool
	attempt  int // the attempt last shown
	lost     int // circuits lost in this attempt, last shown
}

func newProgressBar(w io.Writer) *progressBar {
	b := &progressBar{w: w, start: time.Now(), lastTen: -1}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			b.term = true
		}
	}
	return b
}

// update redraws with held of total chunks; rates are the downloading
// circuits' rates in bytes per second (shown one by one: a slow circuit is
// visible, and the window replaces it); lost counts the circuits of this
// attempt that failed and were replaced.
func (b *progressBar) update(held, total, size, resumed uint64, attempt int, rates []float64, lost int) {
	if total == 0 {
		return
	}
	if attempt > b.attempt {
		if b.attempt > 0 {
			if b.term {
				fmt.Fprintln(b.w)
			}
			fmt.Fprintf(b.w, "get: download interrupted; resuming through new circuits (attempt %d) with %d of %d chunks held\n", attempt, held, total)
		}
		b.attempt, b.lost = attempt, 0
	}
	if lost > b.lost {
		if b.term {
			fmt.Fprintln(b.w)
		}
		fmt.Fprintf(b.w, "get: circuit lost; resuming through a new circuit (%d replaced) with %d of %d chunks held\n", lost, held, total)
		b.lost = lost
	}
	if !b.said {
		b.said = true
		b.base = resumed
		if resumed > 0 {
			fmt.Fprintf(b.w, "resuming: %d of %d chunks already held\n", resumed, total)
		}
	}
	now := time.Now()
	bytesHeld := min(held*proto.ChunkSize, size)
	el := now.Sub(b.start).Seconds()
	rate := 0.0
	if el > 0 && held > b.base {
		rate = float64((held-b.base)*proto.ChunkSize) / el
	}
	eta := "?"
	if rate > 0 {
		eta = (time.Duration(float64(size-bytesHeld)/rate) * time.Second).Round(time.Second).String()
	}
	pct := 100 * float64(held) / float64(total)
	if b.term {
		if now.Sub(b.lastDraw) < 100*time.Millisecond && held != total {
			return
		}
		b.lastDraw = now
		const width = 30
		fill := int(pct / 100 * width)
		fmt.Fprintf(b.w, "\r[%s%s] %5.1f%%  %s / %s  %s/s  ETA %s%s   ", strings.Repeat("#", fill), strings.Repeat(".", width-fill),
			pct, humanBytes(float64(bytesHeld)), humanBytes(float64(size)), humanBytes(rate), eta, circuitRates(rates))
		return
	}
	if ten := int(pct) / 10; ten > b.lastTen {
		b.lastTen = ten
		fmt.Fprintf(b.w, "get: %3.0f%%  %s of %s, %s/s, ETA %s%s\n", pct, humanBytes(float64(bytesHeld)), humanBytes(float64(size)), humanBytes(rate), eta, circuitRates(rates))
	}
}

func (b *progressBar) finish(err error) {
	if b.term && b.said {
		fmt.Fprintln(b.w)
	}
	if err == nil {
		fmt.Fprintf(b.w, "get: done in %v, every chunk verified\n", time.Since(b.start).Round(time.Millisecond))
	}
}

func humanBytes(v float64) string {
	units := []string{"B", "kB", "MB", "GB", "TB"}
	i := 0
	for v >= 1000 && i < len(units)-1 {
		v /= 1000
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f %s", v, units[i])
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

// circuitRates shows each circuit's rate in one unit: "  [5 circuits
// 1.2 0.9 1.1 1.0 0.8 MB/s]".
func circuitRates(rates []float64) string {
	if len(rates) == 0 {
		return ""
	}
	top := 0.0
	for _, r := range rates {
		top = max(top, r)
	}
	units := []string{"B/s", "kB/s", "MB/s", "GB/s"}
	div, u := 1.0, 0
	for top/div >= 1000 && u < len(units)-1 {
		div *= 1000
		u++
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "  [%d circuits", len(rates))
	for _, r := range rates {
		fmt.Fprintf(&sb, " %.1f", r/div)
	}
	fmt.Fprintf(&sb, " %s]", units[u])
	return sb.String()
}
