package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"

	"veil/circuits"
	"veil/facilitator"
	"veil/ordb"
	"veil/proto"
)

// testnetMagnet is testnet's magnet step: Debian's aria2c seeds a 4 MB
// torrent on 127.0.0.1; one node becomes a facilitator (freerider client
// and facilitator service), another the requester's ORDB (an ordb.Relay
// that knows that facilitator); the requester fetches the torrent by
// magnet link through a circuit of hops hops to that ORDB and checks the
// info dictionary, every piece and the whole SHA-256. Without aria2c it
// says so and does nothing.
func testnetMagnet(ctx context.Context, out io.Writer, nodes []*localNode, hops int, dir string) error {
	bin, err := exec.LookPath("aria2c")
	if err != nil {
		fmt.Fprintln(out, "magnet step skipped: no seeder tool (aria2c, Debian package aria2) on this machine")
		return nil
	}
	if len(nodes) < hops+2 {
		fmt.Fprintf(out, "magnet step skipped: it needs at least %d nodes\n", hops+2)
		return nil
	}
	// The torrent: 4 MB of random bytes and its .torrent.
	tdir, err := os.MkdirTemp(dir, "magnet-")
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

	// The facilitator and the ORDB that knows it.
	fac, ordbNode, requester := nodes[1], nodes[2], nodes[len(nodes)-1]
	ccfg := facilitator.DefaultConfig()
	ccfg.AllowPrivatePeers = true
	ccfg.Peers = []netip.AddrPort{seeder}
	ccfg.MetadataTimeout = 20 * time.Second
	client, err := facilitator.New(ccfg)
	if err != nil {
		return err
	}
	defer client.Close()
	server, err := facilitator.NewServer(facilitator.ServerConfig{Fetcher: client})
	if err != nil {
		return err
	}
	defer server.Close()
	fac.sw.Handle(facilitator.ServiceDest, func(s *circuits.Stream) { server.Serve(s) })
	rcfg := ordb.DefaultRelayConfig()
	rcfg.Core.Self = ordbNode.id.ID
	rcfg.Core.Facilitators = true
	finder, err := ordb.NewFacilitatorFinder(ordb.FinderConfig{Self: ordbNode.id.ID, Builder: testnetFacBuilder{from: ordbNode, to: fac.desc},
		Configured: []proto.ProviderRecord{{ORDB: fac.id.ID, Addr: fac.desc.Addrs[0], Facilitator: true, Key: ordb.FacilitatorKey}}})
	if err != nil {
		return err
	}
	defer finder.Close()
	rcfg.Facilitators = finder
	relay, err := ordb.NewRelay(rcfg)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go relay.Run(rctx)
	defer relay.Close()
	ordbNode.sw.Handle(ordbDest, func(s *circuits.Stream) { relay.Serve(ordb.FromCircuitStream(s)) })

	// The requester's circuit: hops-1 relays, then the ORDB.
	var path []proto.NodeDescriptor
	for _, n := range nodes[3 : len(nodes)-1] {
		if len(path) == hops-1 {
			break
		}
		path = append(path, n.desc)
	}
	path = append(path, ordbNode.desc)
	bctx, bcancel := context.WithTimeout(ctx, 30*time.Second)
	circ, err := requester.sw.Build(bctx, path)
	bcancel()
	if err != nil {
		return fmt.Errorf("magnet step: building the circuit: %w", err)
	}
	defer circ.Close()
	magnet := fmt.Sprintf("magnet:?xt=urn:btih:%x&dn=magnet.bin", mi.HashInfoBytes())
	fmt.Fprintf(out, "magnet step: aria2c seeds %s on %v; facilitator %s, ORDB %s\n", magnet, seeder, fac.id.ID.Short(), ordbNode.id.ID.Short())
	target, err := facilitator.ParseTarget(magnet)
	if err != nil {
		return err
	}
	h := sha256.New()
	t0 := time.Now()
	gctx, gcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer gcancel()
	_, err = facilitator.Get(gctx, facilitator.GetConfig{Target: target, Workers: 2,
		Open: func(ctx context.Context, _ int) (facilitator.Stream, error) { return circ.OpenStream(ctx, ordbDest) }}, h)
	if err != nil {
		return fmt.Errorf("magnet step: %w", err)
	}
	took := time.Since(t0)
	if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
		return fmt.Errorf("magnet step: fetched torrent differs (sha256 %x, want %x)", got, want)
	}
	st := client.Stats()
	fmt.Fprintf(out, "ok: torrent fetched through a %d-hop circuit and the facilitator in %v, info and every piece checked, sha256 %x matches; the facilitator uploaded %d bytes\n",
		len(path), took.Round(time.Millisecond), want[:8], st.BytesWrittenData)
	return nil
}

// testnetFacBuilder builds the ORDB's one-hop circuit to the facilitator.
type testnetFacBuilder struct {
	from *localNode
	to   proto.NodeDescriptor
}

type testnetFacCircuit struct{ c *circuits.Circuit }

func (c testnetFacCircuit) OpenStream(ctx context.Context) (ordb.CellStream, error) {
	return c.c.OpenStream(ctx, facilitator.ServiceDest)
}
func (c testnetFacCircuit) Done() <-chan struct{} { return c.c.Done() }
func (c testnetFacCircuit) Close() error          { return c.c.Close() }

func (b testnetFacBuilder) BuildToFacilitator(ctx context.Context, _ proto.ProviderRecord) (ordb.ORDBCircuit, error) {
	c, err := b.from.sw.Build(ctx, []proto.NodeDescriptor{b.to})
	if err != nil {
		return nil, err
	}
	return testnetFacCircuit{c}, nil
}
