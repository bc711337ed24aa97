package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/exec"
	"time"

	"veil/cmd/veil/internal/node"
	"veil/proto"
)

// players are the media players `veil stream --play` looks for, in order.
var players = []string{"mpv", "vlc"}

func setupStream(fs *flag.FlagSet) func(context.Context, *env) error {
	nf := addNodeFlags(fs)
	play := fs.Bool("play", false, "start a player (mpv or vlc, if installed) on the gateway URL")
	return func(ctx context.Context, e *env) error {
		if len(e.args) != 1 {
			return errUsage
		}
		name, err := proto.ParseHashName(e.args[0])
		if err != nil {
			return withCode(exitUsage, fmt.Errorf("%q is not a hash_name: want the %d hex digits `veil put` prints", e.args[0], 2*proto.IDSize))
		}
		cfg, err := nf.resolve()
		if err != nil {
			return err
		}
		c, err := dialNode(ctx, cfg)
		if err != nil {
			if errors.Is(err, node.ErrNoNode) {
				return withCode(exitNoNode, fmt.Errorf("%w: streaming needs a running node, whose HTTP gateway serves the player; start one with `veil node` (data directory %s)", err, cfg.DataDirOrDefault()))
			}
			return err
		}
		return stream(ctx, e, c, name, *play)
	}
}

// stream starts the node's fetch of name, prints the gateway URL on
// stdout and the buffering on stderr until the content is whole (a live
// stream: until Ctrl-C), or the player started exits.
func stream(ctx context.Context, e *env, c *node.Client, name proto.HashName, play bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var player *exec.Cmd
	var exited chan error
	shown := newBufferLine(e.stderr)
	err := c.Stream(ctx, name.String(), func(ev node.StreamEvent) bool {
		if player == nil && exited == nil {
			fmt.Fprintln(e.stdout, ev.URL)
			exited = make(chan error, 1)
			if play {
				player = startPlayer(e.stderr, ev.URL)
				if player != nil {
					go func() { exited <- player.Wait(); cancel() }()
				}
			}
		}
		shown.update(ev)
		return true
	})
	shown.finish()
	if player != nil {
		// The content is whole (or the player quit): the player goes on
		// reading from the node until it exits.
		if err == nil {
			fmt.Fprintf(e.stderr, "stream: all of the content is held; waiting for %s to exit\n", player.Path)
		}
		select {
		case <-exited:
			return nil
		case <-ctx.Done():
			_ = player.Process.Kill()
			<-exited
			return nil
		}
	}
	if errors.Is(err, context.Canceled) {
		return nil // Ctrl-C
	}
	return fetchErr(err)
}

// startPlayer starts the first player found on url; nil if none is.
func startPlayer(stderr io.Writer, url string) *exec.Cmd {
	for _, p := range players {
		path, err := exec.LookPath(p)
		if err != nil {
			continue
		}
		cmd := exec.Command(path, url)
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		if err := cmd.Start(); err != nil {
			fmt.Fprintf(stderr, "stream: starting %s: %v\n", p, err)
			continue
		}
		fmt.Fprintf(stderr, "stream: playing in %s\n", p)
		return cmd
	}
	fmt.Fprintf(stderr, "stream: no player found (looked for %v in PATH): open the URL above in one\n", players)
	return nil
}

// bufferLine shows the buffering: how much is held ahead of the play
// position, and of the whole. Redrawn on a terminal, a line every 5 s
// otherwise.
type bufferLine struct {
	w    io.Writer
	term bool
	last time.Time
	any  bool
}

func newBufferLine(w io.Writer) *bufferLine {
	return &bufferLine{w: w, term: newProgressBar(w).term}
}

func (b *bufferLine) update(ev node.StreamEvent) {
	now := time.Now()
	if !ev.Done && !b.term && now.Sub(b.last) < 5*time.Second {
		return
	}
	b.last = now
	var s string
	switch {
	case ev.Size < 0:
		s = fmt.Sprintf("live: %s ahead of the player, newest chunk %d", human(ev.Ahead), ev.Held)
	case ev.Position < 0:
		s = fmt.Sprintf("%.1f%% held (%s of %s); no player reading yet", percent(ev.Held, ev.Total), human(int64(ev.Held)*proto.ChunkSize), human(ev.Size))
	default:
		s = fmt.Sprintf("%.1f%% held; %s ahead of the play position %s of %s", percent(ev.Held, ev.Total), human(ev.Ahead), human(ev.Position), human(ev.Size))
	}
	if b.term {
		fmt.Fprintf(b.w, "\r\033[Kbuffering: %s", s)
	} else {
		fmt.Fprintf(b.w, "buffering: %s\n", s)
	}
	b.any = true
}

func (b *bufferLine) finish() {
	if b.term && b.any {
		fmt.Fprintln(b.w)
	}
}

func percent(held, total uint64) float64 {
	if total == 0 {
		return 100
	}
	return 100 * float64(held) / float64(total)
}

// human formats a byte count.
func human(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}
