package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"veil/cmd/veil/internal/node"
)

// stdin is what `veil put --live` reads (tests replace it).
var stdin io.Reader = os.Stdin

// putLive is `veil put --live`: standard input goes to the running node
// as a live stream until it ends; the hash_name is printed at once, so
// that players can start (`veil stream HASH`).
func putLive(ctx context.Context, e *env, nf *nodeFlags, mime string) error {
	if len(e.args) > 1 || (len(e.args) == 1 && e.args[0] != "-") {
		return withCode(exitUsage, errors.New("--live reads standard input: give no FILE (or -)"))
	}
	cfg, err := nf.resolve()
	if err != nil {
		return err
	}
	c, err := dialNode(ctx, cfg)
	if err != nil {
		if errors.Is(err, node.ErrNoNode) {
			return withCode(exitNoNode, fmt.Errorf("%w: publishing needs a node that keeps serving the stream; start one with `veil node` (data directory %s)", err, cfg.DataDirOrDefault()))
		}
		return err
	}
	if mime == "" {
		mime = "video/mp2t"
	}
	err = c.PutLive(ctx, mime, stdin, func(name string) {
		fmt.Fprintln(e.stdout, name)
		if f, ok := e.stdout.(interface{ Sync() error }); ok {
			_ = f.Sync()
		}
	}, func(ev node.LiveEvent) {
		fmt.Fprintf(e.stderr, "live: %s in %d chunks, advertised to %d ORDBs\n", human(int64(ev.Bytes)), ev.Chunks, ev.Advertised)
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
