package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"

	"veil/cmd/veil/internal/config"
	"veil/cmd/veil/internal/node"
)

// runTestnetMagnet is testnet's magnet step: Debian's aria2c seeds a
// 4 MB torrent on 127.0.0.1; a node with roles.facilitator joins (its
// F-flagged record goes into the DHT); the fetching node gets the torrent
// by magnet link through its own circuits to its ORDBs, which find the
// facilitator and relay; every piece and the whole SHA-256 are checked.
// Without aria2c it says so and does nothing.
func runTestnetMagnet(ctx context.Context, tn *testnet) error {
	out := tn.out
	bin, err := exec.LookPath("aria2c")
	if err != nil {
		fmt.Fprintln(out, "magnet step skipped: no seeder tool (aria2c, Debian package aria2) on this machine")
		return nil
	}
	// The torrent: 4 MB of random bytes and its .torrent.
	tdir, err := os.MkdirTemp("", "veil-magnet-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tdir)
	data := make([]byte, 4<<20)
	rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	want := sha256.Sum256(data)
	if err := os.WriteFile(filepath.Join(tdir, "magnet.bin"), data, 0o644); err != nil {
		return err
	}
	info := metainfo.Info{PieceLength: 256 << 10}
	if err := info.BuildFromFilePath(filepath.Join(tdir, "magnet.bin")); err != nil {
		return err
	}
	ib, err := bencode.Marshal(info)
	if err != nil {
		return err
	}
	mi := metainfo.MetaInfo{InfoBytes: ib}
	tfile := filepath.Join(tdir, "magnet.torrent")
	f, err := os.Create(tfile)
	if err != nil {
		return err
	}
	err = mi.Write(f)
	f.Close()
	if err != nil {
		return err
	}
	// The seeder, on a free port of 127.0.0.1, DHT, LPD and PEX off.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.CommandContext(ctx, bin, "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
		"--enable-peer-exchange=false", "--seed-ratio=0", "--listen-port="+strconv.Itoa(port), "--bt-seed-unverified=true",
		"--check-integrity=false", "--bt-external-ip=127.0.0.1", "--interface=127.0.0.1", "--disable-ipv6=true",
		"--console-log-level=error", "--summary-interval=0", "--dir="+tdir, tfile)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting aria2c: %w", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	seeder := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	for deadline := time.Now().Add(20 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", seeder.String(), time.Second); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("aria2c not seeding on %v after 20s", seeder)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond): // polling an external process
		}
	}

	c := config.Default()
	c.DataDir = filepath.Join(tdir, "facilitator")
	c.Listen, c.HTTP, c.AllowPrivate = "127.0.0.1:0", "", true
	c.Control.Listen, c.SOCKS = "", ""
	c.Roles.Facilitator = true
	c.Facilitator.Peers = []string{seeder.String()}
	c.Bridges = []string{tn.nodes[0].BridgeLine()}
	fac, err := node.Start(node.Options{Config: c})
	if err != nil {
		return fmt.Errorf("starting the facilitator: %w", err)
	}
	defer fac.Close()
	go fac.Run(ctx)
	magnet := fmt.Sprintf("magnet:?xt=urn:btih:%x&dn=magnet.bin", mi.HashInfoBytes())
	fmt.Fprintf(out, "magnet step: aria2c seeds %s on %v; facilitator node %s\n", magnet, seeder, fac.ID().Short())
	t0 := time.Now()
	var lastErr error
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		h := sha256.New()
		_, err := tn.getter.FetchTorrent(ctx, node.TorrentRequest{Target: magnet}, h)
		if err == nil {
			if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
				return fmt.Errorf("fetched torrent differs (sha256 %x, want %x)", got, want)
			}
			fmt.Fprintf(out, "fetched the torrent through the node's ORDBs and the facilitator in %v, info and every piece checked, sha256 %x matches\n",
				time.Since(t0).Round(time.Millisecond), want[:8])
			return nil
		}
		lastErr = err
		if !strings.Contains(err.Error(), "unavailable") && !strings.Contains(err.Error(), "no ORDB") {
			return err
		}
		select { // the facilitator's record may not be in the DHT yet
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return lastErr
}
