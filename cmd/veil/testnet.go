package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"time"

	"veil/ordb"
	"veil/proto"
)

func setupTestnet(fs *flag.FlagSet) func(context.Context, *env) error {
	nodes := fs.Int("nodes", 8, "how many nodes the local network has (at least hops+1)")
	hops := fs.Int("hops", 3, "hops of the requester's circuit; the last hop is the ORDB holding the content")
	size := fs.Int64("size", 8<<20, "bytes of random content to publish when -file is not given")
	file := fs.String("file", "", "publish this file instead of random bytes")
	dir := fs.String("dir", "", "keep the nodes' stores in this directory (default: a temporary one, removed at exit)")
	procs := fs.Bool("procs", false, "run each node as its own `veil node` process, joined through a bridge, and move the content with `veil put` and `veil get`")
	return func(ctx context.Context, e *env) error {
		if len(e.args) != 0 {
			return errUsage
		}
		if *hops < 1 || *hops > 8 {
			return fmt.Errorf("-hops must be between 1 and 8, got %d", *hops)
		}
		if *nodes < *hops+1 {
			return fmt.Errorf("-nodes must be at least hops+1 = %d, got %d", *hops+1, *nodes)
		}
		if *file == "" && (*size < 0 || *size > 1<<30) {
			return fmt.Errorf("-size must be between 0 and 1 GiB, got %d", *size)
		}
		cfg := testnetConfig{nodes: *nodes, hops: *hops, size: *size, file: *file, dir: *dir}
		if *procs {
			return runTestnetProcs(ctx, e.stdout, cfg)
		}
		return runTestnet(ctx, e.stdout, cfg)
	}
}

type testnetConfig struct {
	nodes, hops int
	size        int64
	file, dir   string
}

// runTestnet starts a network on 127.0.0.1, publishes content at one node
// (which serves it as an ORDB) and fetches it at another through a circuit,
// verifying every chunk, then checks the bytes match.
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

	fmt.Fprintf(out, "starting %d nodes on 127.0.0.1 ...\n", cfg.nodes)
	net := make([]*localNode, 0, cfg.nodes)
	defer func() {
		for _, n := range net {
			n.close()
		}
	}()
	for range cfg.nodes {
		n, err := startLocalNode(dir, proto.FlagRelay|proto.FlagORDB)
		if err != nil {
			return fmt.Errorf("starting node: %w", err)
		}
		net = append(net, n)
	}
	publisher, requester := net[0], net[len(net)-1]

	src, want, err := testnetContent(cfg)
	if err != nil {
		return err
	}
	t0 := time.Now()
	// A key for this content alone: signed by the node's identity key,
	// the descriptor would name the publishing node.
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		return err
	}
	d, name, err := publisher.store.Publish(ctx, key, "application/octet-stream", uint64(t0.Unix()), src)
	if err != nil {
		return fmt.Errorf("publishing: %w", err)
	}
	fmt.Fprintf(out, "published %d bytes at node %s in %v\n  hash_name %v\n", d.Size, publisher.id.ID.Short(), time.Since(t0).Round(time.Millisecond), name)

	// The circuit: hops-1 relays drawn at random among the other nodes,
	// then the publisher, which serves as the ORDB at the circuit's end.
	relays := rand.Perm(len(net) - 2)
	path := make([]proto.NodeDescriptor, 0, cfg.hops)
	for _, i := range relays[:cfg.hops-1] {
		path = append(path, net[i+1].desc)
	}
	path = append(path, publisher.desc)
	bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t1 := time.Now()
	circ, err := requester.sw.Build(bctx, path)
	if err != nil {
		return fmt.Errorf("building the circuit: %w", err)
	}
	defer circ.Close()
	fmt.Fprintf(out, "built a %d-hop circuit in %v: %s\n", circ.Hops(), time.Since(t1).Round(time.Microsecond), pathString(requester, path))

	stream, err := circ.OpenStream(bctx, ordbDest)
	if err != nil {
		return fmt.Errorf("opening the ORDB stream: %w", err)
	}
	t2 := time.Now()
	next := 1
	_, err = ordb.Fetch(ctx, stream, name, requester.store, ordb.FetchConfig{
		Progress: func(held, total uint64) {
			for next <= 4 && held*4 >= uint64(next)*total {
				fmt.Fprintf(out, "  %3d%%  %d/%d chunks verified and stored\n", next*25, held, total)
				next++
			}
		},
	})
	if err != nil {
		return fmt.Errorf("fetching through the circuit: %w", err)
	}
	took := time.Since(t2)
	fmt.Fprintf(out, "fetched %d bytes through the circuit in %v (%.1f MB/s), every chunk verified\n",
		d.Size, took.Round(time.Millisecond), float64(d.Size)/took.Seconds()/1e6)

	r, err := requester.store.NewReader(ctx, name)
	if err != nil {
		return err
	}
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return fmt.Errorf("reading back: %w", err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want) {
		return fmt.Errorf("fetched content differs from what was published (sha256 %x, want %x)", got, want)
	}
	st := circ.Stats()
	fmt.Fprintf(out, "ok: sha256 %x matches; circuit carried %d cells in, %d out\n", want[:8], st.CellsRecv, st.CellsSent)
	return testnetMagnet(ctx, out, net, cfg.hops, dir)
}

// testnetContent returns the content to publish and its SHA-256.
func testnetContent(cfg testnetConfig) (io.Reader, []byte, error) {
	var data []byte
	if cfg.file != "" {
		b, err := os.ReadFile(cfg.file)
		if err != nil {
			return nil, nil, err
		}
		data = b
	} else {
		data = make([]byte, cfg.size)
		rng := rand.New(rand.NewPCG(rand.Uint64(), 0))
		for i := 0; i+8 <= len(data); i += 8 {
			v := rng.Uint64()
			for k := range 8 {
				data[i+k] = byte(v >> (8 * k))
			}
		}
	}
	sum := sha256.Sum256(data)
	return bytes.NewReader(data), sum[:], nil
}

func pathString(from *localNode, path []proto.NodeDescriptor) string {
	s := from.id.ID.Short()
	for _, d := range path {
		s += " -> " + d.ID.Short()
	}
	return s + " (ORDB)"
}
