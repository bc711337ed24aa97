package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"veil/cmd/veil/internal/config"
	"veil/cmd/veil/internal/node"
	"veil/proto"
)

// sampleVideo is a 3-second test pattern (H.264 in MP4, 17 kB), published
// when ffmpeg is not there to make a bigger one.
//
//go:embed testnetdata/sample.mp4
var sampleVideo []byte

func setupTestnet(fs *flag.FlagSet) func(context.Context, *env) error {
	nodes := fs.Int("nodes", 8, "how many nodes the local network has (at least 7: the publisher's six ORDBs and itself)")
	hops := fs.Int("hops", 3, "hops of every circuit")
	size := fs.Int64("size", 8<<20, "bytes of random content to publish as the file when -file is not given")
	file := fs.String("file", "", "publish this file instead of random bytes")
	video := fs.String("video", "", "the sample video: a file, `embedded` for the small one built in (default: made with ffmpeg if present, else the embedded one)")
	dir := fs.String("dir", "", "keep the nodes' stores in this directory (default: a temporary one, removed at exit)")
	httpAddr := fs.String("http", "127.0.0.1:0", "local API and dashboard address of the fetching node (loopback `IP:PORT`)")
	once := fs.Bool("once", false, "exit after the fetches (0 only if every fetch verified) instead of running until Ctrl-C")
	procs := fs.Bool("procs", false, "run each node as its own `veil node` process, joined through a bridge, and move the content with `veil put` and `veil get`")
	return func(ctx context.Context, e *env) error {
		if len(e.args) != 0 {
			return errUsage
		}
		if *hops < 1 || *hops > 8 {
			return fmt.Errorf("-hops must be between 1 and 8, got %d", *hops)
		}
		least := max(*hops+1, minTestnetNodes)
		if *procs {
			least = *hops + 1
		}
		if *nodes < least {
			return fmt.Errorf("-nodes must be at least %d, got %d", least, *nodes)
		}
		if *file == "" && (*size < 0 || *size > 1<<30) {
			return fmt.Errorf("-size must be between 0 and 1 GiB, got %d", *size)
		}
		cfg := testnetConfig{nodes: *nodes, hops: *hops, size: *size, file: *file, dir: *dir, video: *video, http: *httpAddr, once: *once}
		if *procs {
			return runTestnetProcs(ctx, e.stdout, cfg)
		}
		return runTestnet(ctx, e.stdout, cfg)
	}
}

// minTestnetNodes: a publisher advertises to its six closest ORDBs, and
// warns with fewer.
const minTestnetNodes = 7

type testnetConfig struct {
	nodes, hops int
	size        int64
	file, dir   string
	video, http string
	once        bool
}

// testnet is a running in-process network: real nodes (node.Node, as
// `veil node` runs them) on 127.0.0.1, joined through the first one.
type testnet struct {
	out   io.Writer
	nodes []*node.Node
	// The roles of the walkthrough: two publishers and the node whose
	// user fetches (the only one with a local API and dashboard).
	videoPub, filePub, getter *node.Node
}

// runTestnet is `veil testnet`: it starts a network of real nodes in this
// process, publishes a sample video and a file at two of them, fetches
// both at a third through circuits to its own ORDBs (which look the
// content up in the DHT and relay from the publishers' ORDBs), checks
// every byte, and keeps the network running with the fetching node's
// dashboard until ctx ends (Ctrl-C), or returns at once with cfg.once.
func runTestnet(ctx context.Context, out io.Writer, cfg testnetConfig) error {
	dir := cfg.dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "veil-testnet-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	tn := &testnet{out: out}
	defer func() {
		stop()
		for _, n := range tn.nodes {
			n.Close()
		}
	}()

	data, err := fileContent(cfg)
	if err != nil {
		return err
	}
	video, vmime, vnote, err := sampleVideoContent(ctx, dir, cfg.video)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "sample video: %s (%s, %d bytes)\n", vnote, vmime, len(video))

	fmt.Fprintf(out, "starting %d nodes on 127.0.0.1 (TLS links, a bbolt store each, every node a relay and an ORDB) ...\n", cfg.nodes)
	t0 := time.Now()
	if err := tn.start(runCtx, dir, cfg); err != nil {
		return err
	}
	fmt.Fprintf(out, "the network is up in %v: every node joined the DHT through node %s, knows the others and built its circuits\n",
		time.Since(t0).Round(time.Millisecond), tn.nodes[0].ID().Short())

	type item struct {
		what string
		pub  *node.Node
		mime string
		data []byte
		name proto.HashName
	}
	items := []*item{
		{what: "the video", pub: tn.videoPub, mime: vmime, data: video},
		{what: "the file", pub: tn.filePub, mime: "application/octet-stream", data: data},
	}
	for _, it := range items {
		if it.name, err = tn.publish(ctx, it.what, it.pub, it.mime, it.data); err != nil {
			return err
		}
	}
	var failed []string
	for _, it := range items {
		if err := tn.fetch(ctx, it.what, it.name, it.data); err != nil {
			fmt.Fprintf(out, "FAILED: %s: %v\n", it.what, err)
			failed = append(failed, it.what)
		}
	}
	if err := runTestnetMagnet(ctx, tn); err != nil {
		fmt.Fprintf(out, "FAILED: the magnet: %v\n", err)
		failed = append(failed, "the magnet")
	}
	tn.relaySummary(ctx)

	if len(failed) == 0 {
		fmt.Fprintf(out, "ok: every fetch verified\n")
	}
	if !cfg.once {
		fmt.Fprintf(out, "\ndashboard of the fetching node %s:\n  %s\nmetrics: %s (the same key, or the node's cookie)\n",
			tn.getter.ID().Short(), tn.getter.DashboardURL(), strings.Replace(tn.getter.DashboardURL(), "/?k=", node.MetricsPath+"?k=", 1))
		fmt.Fprintf(out, "the video at the fetching node's gateway (a player or a browser):\n  %s\nthe network keeps running; Ctrl-C stops it\n", tn.getter.ContentURL(items[0].name))
		<-ctx.Done()
		fmt.Fprintf(out, "stopping the network\n")
	}
	if len(failed) > 0 {
		return fmt.Errorf("%s not fetched and verified", strings.Join(failed, " and "))
	}
	return nil
}

// start starts the nodes and waits until each knows the others and has
// circuits.
func (tn *testnet) start(ctx context.Context, dir string, cfg testnetConfig) error {
	for i := range cfg.nodes {
		c := config.Default()
		c.DataDir = filepath.Join(dir, fmt.Sprintf("node%d", i))
		c.Listen, c.HTTP, c.AllowPrivate = "127.0.0.1:0", "", true
		c.Control.Listen, c.SOCKS = "", "" // no control or SOCKS port: several nodes in one process
		c.Tunnels.Hops, c.Tunnels.MinCircuits, c.Tunnels.MaxCircuits = cfg.hops, 2, 4
		if i == 0 {
			c.Roles.Bridge = true
		} else {
			c.Bridges = []string{tn.nodes[0].BridgeLine()}
		}
		if i == cfg.nodes-1 {
			c.HTTP = cfg.http
		}
		n, err := node.Start(node.Options{Config: c})
		if err != nil {
			return fmt.Errorf("starting node %d: %w", i, err)
		}
		tn.nodes = append(tn.nodes, n)
		go n.Run(ctx)
	}
	tn.videoPub, tn.filePub, tn.getter = tn.nodes[1], tn.nodes[2], tn.nodes[len(tn.nodes)-1]
	deadline := time.Now().Add(60 * time.Second)
	for i, n := range tn.nodes {
		for {
			st := n.Status(ctx)
			if st.Directory >= len(tn.nodes)-1 && len(st.Circuits) >= 1 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("node %d knows %d of the %d other nodes and has %d circuits after 60s (%s)", i, st.Directory, len(tn.nodes)-1, len(st.Circuits), st.PoolError)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// publish publishes data at pub, which advertises it through its own
// circuits to its ORDBs.
func (tn *testnet) publish(ctx context.Context, what string, pub *node.Node, mime string, data []byte) (proto.HashName, error) {
	t0 := time.Now()
	p, err := pub.Publish(ctx, mime, bytes.NewReader(data))
	if err != nil && p.Advertised == 0 {
		return p.Name, fmt.Errorf("publishing %s: %w", what, err)
	}
	st := pub.Status(ctx)
	var ordbs []string
	if st.ORDB != nil {
		for _, id := range st.ORDB.ORDBs {
			ordbs = append(ordbs, id[:8])
		}
	}
	fmt.Fprintf(tn.out, "published %s at node %s in %v: %d bytes, hash_name %v\n  advertised through its circuits to its %d ORDBs (%s), which announce themselves in the DHT, not the publisher\n",
		what, pub.ID().Short(), time.Since(t0).Round(time.Millisecond), p.Size, p.Name, p.Advertised, strings.Join(ordbs, " "))
	if err != nil {
		fmt.Fprintf(tn.out, "  warning: %v\n", err)
	}
	return p.Name, nil
}

// fetch gets name at the getter through circuits to its own ORDBs and
// checks the bytes against want.
func (tn *testnet) fetch(ctx context.Context, what string, name proto.HashName, want []byte) error {
	g := tn.getter
	fmt.Fprintf(tn.out, "fetching %s at node %s through 3-hop circuits to its own ORDBs ...\n", what, g.ID().Short())
	t0 := time.Now()
	next, shown := 1, false
	fctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	_, err := g.Fetch(fctx, name, func(p node.Progress) {
		if !shown && p.Total > 0 {
			for _, tr := range g.Status(fctx).Transfers {
				if tr.HashName == name.String() && len(tr.Circuit) > 0 {
					shown = true
					path := []string{g.ID().Short()}
					for _, id := range tr.Circuit {
						path = append(path, id[:8])
					}
					fmt.Fprintf(tn.out, "  %d circuits, e.g. %s (its ORDB)\n", tr.Circuits, strings.Join(path, " -> "))
				}
			}
		}
		// One line per quarter reached (progress comes at most every
		// 100 ms: a small content may reach several at once).
		q := 0
		for p.Total > 0 && next <= 4 && p.Held*4 >= uint64(next)*p.Total {
			q = next
			next++
		}
		if q > 0 {
			var rates []string
			for _, r := range p.Rates {
				if r > 0 {
					rates = append(rates, humanBytes(r)+"/s")
				}
			}
			line := fmt.Sprintf("  %3d%%  %d/%d chunks verified and stored", q*25, p.Held, p.Total)
			if len(rates) > 0 {
				line += "; circuits at " + strings.Join(rates, ", ")
			}
			fmt.Fprintln(tn.out, line)
		}
	})
	if err != nil {
		return fmt.Errorf("fetching: %w", err)
	}
	took := time.Since(t0)
	r, err := g.Open(ctx, name)
	if err != nil {
		return err
	}
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return fmt.Errorf("reading back: %w", err)
	}
	sum := sha256.Sum256(want)
	if got := h.Sum(nil); !bytes.Equal(got, sum[:]) {
		return fmt.Errorf("fetched content differs from what was published (sha256 %x, want %x)", got, sum)
	}
	fmt.Fprintf(tn.out, "fetched %s: %d bytes in %v (%s/s), every chunk verified; sha256 %x matches\n",
		what, len(want), took.Round(time.Millisecond), humanBytes(float64(len(want))/took.Seconds()), sum[:8])
	return nil
}

// relaySummary says what the ORDBs did: the getter's relayed the
// queries; the publishers' services served nothing of their own.
func (tn *testnet) relaySummary(ctx context.Context) {
	var q, fwd, lookups, stores int64
	for _, n := range tn.nodes {
		if o := n.Status(ctx).ORDB; o != nil {
			q += o.Relay.Queries
			fwd += o.Relay.Forwards
			lookups += o.Relay.Lookups
			stores += o.Relay.Stores
		}
	}
	fmt.Fprintf(tn.out, "ORDBs: %d queries received, %d forwarded, %d DHT lookups, %d provider records stored\n", q, fwd, lookups, stores)
}

// sampleVideoContent returns the sample video, its MIME type and a note
// saying where it came from.
func sampleVideoContent(ctx context.Context, dir, choice string) ([]byte, string, string, error) {
	switch choice {
	case "embedded":
		return sampleVideo, "video/mp4", "the small one built into veil", nil
	case "":
	default:
		b, err := os.ReadFile(choice)
		if err != nil {
			return nil, "", "", err
		}
		mime := "application/octet-stream"
		if strings.HasSuffix(strings.ToLower(choice), ".mp4") {
			mime = "video/mp4"
		}
		return b, mime, choice, nil
	}
	ff, err := exec.LookPath("ffmpeg")
	if err != nil {
		return sampleVideo, "video/mp4", "ffmpeg not found: the small one built into veil", nil
	}
	path := filepath.Join(dir, "sample.mp4")
	var lastErr error
	for _, codec := range []string{"libx264", "mpeg4"} {
		gctx, cancel := context.WithTimeout(ctx, time.Minute)
		out, err := exec.CommandContext(gctx, ff, "-hide_banner", "-loglevel", "error", "-nostdin",
			"-f", "lavfi", "-i", "testsrc2=duration=5:size=480x270:rate=24",
			"-f", "lavfi", "-i", "sine=frequency=440:duration=5",
			"-c:v", codec, "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
			"-movflags", "+faststart", "-y", path).CombinedOutput()
		cancel()
		if err == nil {
			b, err := os.ReadFile(path)
			return b, "video/mp4", "5 s of test pattern and tone made with ffmpeg (" + codec + ")", err
		}
		lastErr = fmt.Errorf("%v: %s", err, bytes.TrimSpace(out))
	}
	return sampleVideo, "video/mp4", fmt.Sprintf("ffmpeg failed (%v): the small one built into veil", lastErr), nil
}

// fileContent is the file to publish: cfg.file, or cfg.size random bytes.
func fileContent(cfg testnetConfig) ([]byte, error) {
	if cfg.file != "" {
		return os.ReadFile(cfg.file)
	}
	data := make([]byte, cfg.size)
	rng := rand.New(rand.NewPCG(rand.Uint64(), 0))
	for i := 0; i+8 <= len(data); i += 8 {
		v := rng.Uint64()
		for k := range 8 {
			data[i+k] = byte(v >> (8 * k))
		}
	}
	return data, nil
}

// testnetContent returns the content --procs publishes and its SHA-256.
func testnetContent(cfg testnetConfig) (io.Reader, []byte, error) {
	data, err := fileContent(cfg)
	if err != nil {
		return nil, nil, err
	}
	sum := sha256.Sum256(data)
	return bytes.NewReader(data), sum[:], nil
}
