package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"veil/cmd/veil/internal/config"
	"veil/cmd/veil/internal/node"
	"veil/facilitator"
)

// torrentFlags are `veil get`'s options for a magnet link or infohash.
type torrentFlags struct {
	torrent *bool
	file    *string
	index   *int
	seed    *bool
}

func addTorrentFlags(fs interface {
	Bool(string, bool, string) *bool
	String(string, string, string) *string
	Int(string, int, string) *int
}) *torrentFlags {
	return &torrentFlags{
		torrent: fs.Bool("torrent", false, "the argument is a BitTorrent infohash (40 hex digits are a veil hash_name otherwise; magnet links and 32-character base32 infohashes need no flag)"),
		file:    fs.String("file", "", "of a multi-file torrent, fetch the file with this `PATH` only"),
		index:   fs.Int("index", -1, "of a multi-file torrent, fetch file number `N` (from 0) only"),
		seed:    fs.Bool("seed", false, "after a torrent fetch, publish the file as veil content through the running node and print its hash_name"),
	}
}

// isTorrentArg tells a magnet link or a base32 infohash from a veil
// hash_name.
func (tf *torrentFlags) isTorrentArg(arg string) bool {
	if *tf.torrent || strings.HasPrefix(strings.ToLower(arg), "magnet:") {
		return true
	}
	return len(arg) == 32 // base32 infohash; a hash_name is 40 hex digits
}

// getTorrent fetches a torrent through the node's own ORDB circuits and a
// facilitator (never from BitTorrent itself), checking the info
// dictionary and every piece, and writes it to dst.
func getTorrent(ctx context.Context, e *env, cfg config.Config, tf *torrentFlags, arg, dst string, anonymousSet bool) error {
	target, err := facilitator.ParseTarget(arg)
	if err != nil {
		return withCode(exitUsage, err)
	}
	req := node.TorrentRequest{Target: arg, File: *tf.file}
	if *tf.index >= 0 {
		req.UseIndex, req.Index = true, *tf.index
	}
	if dst == "" {
		dst = target.InfoHash.String()
		if target.Name != "" && filepath.Base(target.Name) == target.Name && target.Name != "." && target.Name != ".." {
			dst = target.Name
		}
		if *tf.file != "" {
			dst = filepath.Base(*tf.file)
		}
	}
	start := time.Now()
	c, err := dialNode(ctx, cfg)
	switch {
	case err == nil:
		fmt.Fprintf(e.stderr, "get: asking the node's ORDBs for torrent %v (a facilitator fetches it)\n", target.InfoHash)
		if err := writeOut(dst, e.stdout, func(w io.Writer) error { return c.Torrent(ctx, req, w) }); err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "get: done in %v, info dictionary and every piece hash checked\n", time.Since(start).Round(time.Millisecond))
		if *tf.seed {
			return seedFetched(ctx, e, c, dst)
		}
		return nil
	case !errors.Is(err, node.ErrNoNode):
		return err
	}
	if *tf.seed {
		return withCode(exitNoNode, errors.New("--seed needs a running node (`veil node`): it keeps serving what it publishes"))
	}
	n, stop, err := startEphemeral(ctx, e, cfg, anonymousSet)
	if err != nil {
		return err
	}
	defer stop()
	req.Progress = func(done, total int64) {
		fmt.Fprintf(e.stderr, "\rget: %d of %d bytes checked", done, total)
	}
	err = writeOut(dst, e.stdout, func(w io.Writer) error {
		_, err := n.FetchTorrent(ctx, req, w)
		return err
	})
	fmt.Fprintln(e.stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "get: done in %v, info dictionary and every piece hash checked\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// seedFetched publishes what was fetched as ordinary veil content: the
// user chose to seed it. The facilitator kept nothing.
func seedFetched(ctx context.Context, e *env, c *node.Client, path string) error {
	if path == "-" {
		return withCode(exitUsage, errors.New("--seed needs -o FILE, not standard output"))
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := c.Put(ctx, "application/octet-stream", f)
	if err != nil {
		return fmt.Errorf("seeding %s: %w", path, err)
	}
	if r.Warning != "" {
		fmt.Fprintf(e.stderr, "veil get: warning: %s\n", r.Warning)
	}
	fmt.Fprintln(e.stdout, r.HashName)
	return nil
}
