package facilitator

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
)

// testTorrent is content on disk with its .torrent, made in the test.
type testTorrent struct {
	dir     string // holds the content under info.Name
	file    string // the .torrent
	content []byte // a single file's bytes, or all files concatenated
	mi      *metainfo.MetaInfo
	ih      InfoHash
}

// makeTorrent writes files of the given sizes (one file: a single-file
// torrent) filled from a seeded generator and builds their .torrent with
// anacrolix's metainfo builder.
func makeTorrent(tb testing.TB, name string, pieceLen int64, sizes ...int) *testTorrent {
	tb.Helper()
	dir := tb.TempDir()
	rng := rand.New(rand.NewPCG(uint64(len(name)), uint64(pieceLen)))
	var all []byte
	root := filepath.Join(dir, name)
	for i, n := range sizes {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		all = append(all, b...)
		p := root
		if len(sizes) > 1 {
			p = filepath.Join(root, fmt.Sprintf("part%02d.bin", i))
			if err := os.MkdirAll(root, 0o755); err != nil {
				tb.Fatal(err)
			}
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	info := metainfo.Info{PieceLength: pieceLen}
	if err := info.BuildFromFilePath(root); err != nil {
		tb.Fatal(err)
	}
	ib, err := bencode.Marshal(info)
	if err != nil {
		tb.Fatal(err)
	}
	mi := &metainfo.MetaInfo{InfoBytes: ib, CreatedBy: "test"}
	file := filepath.Join(dir, name+".torrent")
	f, err := os.Create(file)
	if err != nil {
		tb.Fatal(err)
	}
	if err := mi.Write(f); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return &testTorrent{dir: dir, file: file, content: all, mi: mi, ih: InfoHash(mi.HashInfoBytes())}
}

// freePort finds a TCP port free on ip for a seeder that cannot be told to
// pick its own.
func freePort(tb testing.TB, ip string) int {
	tb.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitListening waits until something accepts TCP on addr, for seeders
// started as processes.
func waitListening(tb testing.TB, addr netip.AddrPort, within time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr.String(), time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("seeder at %v not listening after %v: %v", addr, within, err)
		}
		time.Sleep(50 * time.Millisecond) // polling an external process, not a timeout
	}
}

// startAnacrolixSeeder seeds tt in-process on 127.0.0.1 with an ordinary
// anacrolix client (the library's own seeding code, not ours).
func startAnacrolixSeeder(tb testing.TB, tt *testTorrent) netip.AddrPort {
	tb.Helper()
	cfg := torrent.NewDefaultClientConfig()
	cfg.Seed = true
	cfg.DataDir = tt.dir
	cfg.ListenHost = func(string) string { return "127.0.0.1" }
	cfg.ListenPort = 0
	cfg.NoDHT = true
	cfg.DisablePEX = true
	cfg.DisableTrackers = true
	cfg.DisableUTP = true
	cfg.NoDefaultPortForwarding = true
	cfg.DisableIPv6 = true
	cfg.Slogger = slog.New(slog.DiscardHandler)
	cl, err := torrent.NewClient(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cl.Close() })
	t, err := cl.AddTorrent(tt.mi)
	if err != nil {
		tb.Fatal(err)
	}
	<-t.GotInfo()
	if err := t.VerifyData(); err != nil {
		tb.Fatal(err)
	}
	select {
	case <-t.Complete().On():
	case <-time.After(time.Minute):
		tb.Fatalf("anacrolix seeder: data not complete after verification (%d bytes missing)", t.BytesMissing())
	}
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(cl.LocalPort()))
}

// startAria2Seeder seeds tt with Debian's aria2c on ip, DHT, LPD and PEX off.
func startAria2Seeder(tb testing.TB, tt *testTorrent, ip string) netip.AddrPort {
	tb.Helper()
	bin, err := exec.LookPath("aria2c")
	if err != nil {
		tb.Skip("aria2c not installed (apt-get install aria2)")
	}
	port := freePort(tb, ip)
	cmd := exec.Command(bin,
		"--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false", "--enable-peer-exchange=false",
		"--seed-ratio=0", "--listen-port="+strconv.Itoa(port),
		"--bt-seed-unverified=true", "--check-integrity=false", "--bt-external-ip="+ip,
		"--interface="+ip, "--disable-ipv6=true", "--enable-mmap=false",
		"--bt-tracker-connect-timeout=1", "--console-log-level=warn", "--summary-interval=0",
		"--dir="+tt.dir, tt.file)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if tb.Failed() {
			tb.Logf("aria2c output:\n%s", out.String())
		}
	})
	addr := netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(port))
	waitListening(tb, addr, 30*time.Second)
	return addr
}

// startTransmissionSeeder seeds tt with Debian's transmission-cli on
// 127.0.0.1: it finds the complete data in its download directory, verifies
// it and seeds. transmission-cli has no option to bind one address, so it
// listens on every interface of the test machine, on a free port.
func startTransmissionSeeder(tb testing.TB, tt *testTorrent) netip.AddrPort {
	tb.Helper()
	bin, err := exec.LookPath("transmission-cli")
	if err != nil {
		tb.Skip("transmission-cli not installed (apt-get install transmission-cli)")
	}
	port := freePort(tb, "127.0.0.1")
	cfgDir := tb.TempDir()
	// Local peer discovery, DHT, PEX, UPnP off; no uploads limit; verify.
	settings := `{"dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "port-forwarding-enabled": false,
"utp-enabled": false, "bind-address-ipv4": "127.0.0.1", "bind-address-ipv6": "::1", "ratio-limit-enabled": false,
"idle-seeding-limit-enabled": false, "encryption": 1, "peer-limit-per-torrent": 50, "speed-limit-up-enabled": false}`
	if err := os.WriteFile(filepath.Join(cfgDir, "settings.json"), []byte(settings), 0o644); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, "-g", cfgDir, "-w", tt.dir, "-p", strconv.Itoa(port), "-ep", "-D", "-U", "-M", tt.file)
	cmd.Dir = tt.dir
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if tb.Failed() {
			tb.Logf("transmission-cli output (tail):\n%s", tail(out.String(), 2000))
		}
	})
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	waitListening(tb, addr, 30*time.Second)
	// It accepts connections before it finished verifying the local data;
	// it reports "Seeding" once it has.
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(out.String(), "Seeding") {
		if time.Now().After(deadline) {
			tb.Fatalf("transmission-cli did not start seeding:\n%s", tail(out.String(), 2000))
		}
		time.Sleep(100 * time.Millisecond) // polling an external process, not a timeout
	}
	return addr
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// listeningSockets lists this process's listening TCP sockets and bound UDP
// sockets ("tcp 127.0.0.1:1234"), from /proc: the socket inodes among this
// process's file descriptors, looked up in /proc/self/net/{tcp,udp}{,6}.
func listeningSockets(tb testing.TB) map[string]bool {
	tb.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Skipf("no /proc here: %v", err)
	}
	mine := make(map[string]bool)
	for _, fd := range fds {
		l, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			mine[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	out := make(map[string]bool)
	for _, proto := range []string{"tcp", "tcp6", "udp", "udp6"} {
		f, err := os.Open("/proc/self/net/" + proto)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || !mine[fields[9]] {
				continue
			}
			const tcpListen = "0A"
			if strings.HasPrefix(proto, "tcp") && fields[3] != tcpListen {
				continue
			}
			out[proto+" "+fields[1]] = true
		}
		f.Close()
	}
	return out
}
