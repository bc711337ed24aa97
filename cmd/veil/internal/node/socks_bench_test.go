package node

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// torSOCKSMBps and torFirstByteMs are Tor's figures for the same
// measurement (curl through Tor's SocksPort to a private Tor network on
// one machine, one circuit): the baseline veil is compared with.
const (
	torSOCKSMBps   = 5.9
	torFirstByteMs = 13.0
)

// curlTimed fetches url with curl (args first) into /dev/null and returns
// the bytes, the seconds until the connection (through SOCKS: the SOCKS
// reply: after the exit's CONNECTED, or at once for an optimistic stream)
// was ready, to the first byte and in total.
func curlTimed(b *testing.B, url string, args ...string) (size, ready, first, total float64) {
	b.Helper()
	args = append(args, "-o", "/dev/null", "-w", "%{size_download} %{time_pretransfer} %{time_starttransfer} %{time_total}", url)
	out, stderr, code := runCurl(b, args...)
	if code != 0 {
		b.Fatalf("curl %v: exit %d %s", args, code, stderr)
	}
	f := strings.Fields(string(out))
	if len(f) != 4 {
		b.Fatalf("curl -w printed %q", out)
	}
	size, _ = strconv.ParseFloat(f[0], 64)
	ready, _ = strconv.ParseFloat(f[1], 64)
	first, _ = strconv.ParseFloat(f[2], 64)
	total, _ = strconv.ParseFloat(f[3], 64)
	return size, ready, first, total
}

// selfCPU is the CPU time this process (every node of the network and
// the origin; not curl) has used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// BenchmarkSOCKSExit: 100 MB with curl through the client's SOCKS port, a
// 3-hop circuit and an exit, from a local HTTP server; beside it, in the
// same run, curl fetching the same file directly (see measureSOCKSExit).
// Every node runs in this process, so all of them share one Go scheduler
// and this machine's cores carry all three hops' crypto;
// BenchmarkSOCKSExitProcesses runs the nodes as processes, as a private
// Tor network does.
func BenchmarkSOCKSExit(b *testing.B) {
	needCurl(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	en := newExitNet(b, ctx, socksBenchSize)
	measureSOCKSExit(b, en.client.SOCKSAddr(), "http://127.0.0.1:"+en.port+"/file", selfCPU)
}

// socksBenchSize is what the SOCKS benchmarks fetch.
const socksBenchSize = 100 << 20

// measureSOCKSExit fetches url (socksBenchSize bytes) b.N times with curl
// through the SOCKS port at socks, and each time once directly. It
// reports the medians of MB/s and time to first byte of both, the SOCKS
// path's share of the direct throughput, its multiple of Tor's 5.9 MB/s,
// and MB per CPU second the nodes spent (cpu: the CPU time they have
// used so far) on each fetch through SOCKS.
func measureSOCKSExit(b *testing.B, socks, url string, cpu func() time.Duration) {
	proxy := []string{"--socks5-hostname", socks}
	// Warm up: the exit circuit is built (and a refusing exit learnt)
	// before the clock runs, as a Tor client's would be.
	if _, stderr, code := runCurl(b, append(proxy, "-r", "0-0", "-o", "/dev/null", url)...); code != 0 {
		b.Fatalf("warm-up: exit %d %s", code, stderr)
	}
	var rate, ready, first, resp, drate, dfirst, perCPU []float64
	b.ResetTimer()
	for range b.N {
		cpu0 := cpu()
		n, r, f, t := curlTimed(b, url, proxy...)
		if n != socksBenchSize {
			b.Fatalf("through SOCKS: %v bytes, want %d", n, socksBenchSize)
		}
		perCPU = append(perCPU, n/1e6/(cpu()-cpu0).Seconds())
		rate, ready, first = append(rate, n/t/1e6), append(ready, r*1e3), append(first, f*1e3)
		resp = append(resp, (f-r)*1e3)
		b.StopTimer()
		n, _, f, t = curlTimed(b, url)
		drate, dfirst = append(drate, n/t/1e6), append(dfirst, f*1e3)
		b.StartTimer()
	}
	b.SetBytes(socksBenchSize)
	r, fb := median(rate), median(first)
	b.ReportMetric(r, "socks_MB/s")
	b.ReportMetric(median(perCPU), "socks_MB/cpu-s")
	b.ReportMetric(fb, "socks_first_byte_ms")
	b.ReportMetric(median(ready), "socks_connected_ms")
	b.ReportMetric(median(resp), "socks_connected_to_first_byte_ms")
	b.ReportMetric(median(drate), "direct_MB/s")
	b.ReportMetric(median(dfirst), "direct_first_byte_ms")
	b.ReportMetric(r/median(drate), "socks/direct")
	b.ReportMetric(r/torSOCKSMBps, "x_tor")
	b.ReportMetric(fb/torFirstByteMs, "first_byte/tor")
}
