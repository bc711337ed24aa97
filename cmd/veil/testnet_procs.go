package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"time"

	"veil/cmd/veil/internal/node"
	"veil/cmd/veil/internal/procnet"
)

// runTestnetProcs is `veil testnet --procs`: the same journey as
// runTestnet, but each node is its own `veil node` process with its own
// data directory, joined through a bridge, and the content goes in with
// `veil put` and out with `veil get`.
func runTestnetProcs(ctx context.Context, out io.Writer, cfg testnetConfig) error {
	bin, err := os.Executable()
	if err != nil {
		return err
	}
	root := cfg.dir
	if root == "" {
		tmp, err := os.MkdirTemp("", "veil-testnet-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		root = tmp
	} else if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}
	pn := procnet.New(bin, root)
	defer pn.Close()
	hops := []string{"--set", "tunnels.hops=" + strconv.Itoa(cfg.hops)}
	dirs := make([]string, cfg.nodes)
	procs := make([]*procnet.Proc, cfg.nodes)
	clients := make([]*node.Client, cfg.nodes)
	t0 := time.Now()
	for i := range dirs {
		dirs[i] = filepath.Join(root, fmt.Sprintf("node%d", i))
		args := append([]string{"--set", "roles.bridge=true"}, hops...)
		if i > 0 {
			st, err := clients[0].Status(ctx)
			if err != nil {
				return err
			}
			args = append([]string{"--bridge", st.BridgeLine}, hops...)
		}
		if procs[i], clients[i], err = pn.Node(fmt.Sprintf("node%d", i), dirs[i], args...); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "started %d `veil node` processes on 127.0.0.1 in %v (logs and data in %s)\n", cfg.nodes, time.Since(t0).Round(time.Millisecond), root)

	t1 := time.Now()
	for i, c := range clients {
		for deadline := time.Now().Add(60 * time.Second); ; {
			st, err := c.Status(ctx)
			if err != nil {
				return fmt.Errorf("node%d: %w", i, err)
			}
			if st.Directory >= cfg.nodes-1 && len(st.Circuits) >= 1 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("node%d knows %d of the %d other nodes and has %d circuits after 60s (%s)", i, st.Directory, cfg.nodes-1, len(st.Circuits), st.PoolError)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	fmt.Fprintf(out, "every node joined the DHT, learned the others' descriptors and built circuits in %v\n", time.Since(t1).Round(time.Millisecond))

	src, want, err := testnetContent(cfg)
	if err != nil {
		return err
	}
	file := filepath.Join(root, "content")
	if err := writeReader(file, src); err != nil {
		return err
	}
	t2 := time.Now()
	put, err := pn.Spawn("put", "", "put", "--data-dir", dirs[1], file)
	if err != nil {
		return err
	}
	if err := put.Wait(5 * time.Minute); err != nil {
		return fmt.Errorf("veil put: %v\n%s", err, pn.Log("put"))
	}
	hash := regexp.MustCompile(`(?m)^[0-9a-f]{40}$`).FindString(pn.Log("put"))
	if hash == "" {
		return fmt.Errorf("veil put printed no hash_name:\n%s", pn.Log("put"))
	}
	fmt.Fprintf(out, "veil put at node1 in %v\n  hash_name %s\n", time.Since(t2).Round(time.Millisecond), hash)

	got := filepath.Join(root, "fetched")
	get, err := pn.Spawn("get", "", "get", "--data-dir", dirs[cfg.nodes-1], "-o", got, hash)
	if err != nil {
		return err
	}
	if err := get.Wait(10 * time.Minute); err != nil {
		return fmt.Errorf("veil get: %v\n%s", err, pn.Log("get"))
	}
	fmt.Fprintf(out, "veil get at node%d, through a %d-hop circuit ending at node1's ORDB:\n%s", cfg.nodes-1, cfg.hops, indent(pn.Log("get")))
	f, err := os.Open(got)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if sum := h.Sum(nil); !bytes.Equal(sum, want) {
		return fmt.Errorf("fetched content differs from what was put (sha256 %x, want %x)", sum, want)
	}
	fmt.Fprintf(out, "ok: sha256 %x matches\n", want[:8])
	stopped := 0
	for _, p := range procs {
		if p.Stop(syscall.SIGTERM, 20*time.Second) && p.Err() == nil {
			stopped++
		}
	}
	if stopped != len(procs) {
		return fmt.Errorf("%d of %d nodes stopped cleanly on SIGTERM", stopped, len(procs))
	}
	fmt.Fprintf(out, "all %d nodes stopped cleanly on SIGTERM\n", stopped)
	return nil
}

func writeReader(path string, r io.Reader) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func indent(s string) string {
	var b bytes.Buffer
	for _, line := range bytes.SplitAfter([]byte(s), []byte("\n")) {
		if len(line) > 0 {
			b.WriteString("  ")
			b.Write(line)
		}
	}
	return b.String()
}
