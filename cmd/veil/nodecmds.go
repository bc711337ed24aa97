package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"veil/cmd/veil/internal/config"
	"veil/cmd/veil/internal/node"
	"veil/proto"
)

// Exit codes, listed by `veil help`.
const (
	exitOK       = 0
	exitFailure  = 1
	exitUsage    = 2 // bad flags, arguments or configuration
	exitNotFound = 3 // no provider of the content was found
	exitNoNode   = 4 // no running node (put, status), or no bridge to start one (get)
)

// exitError carries a specific exit code out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error { return &exitError{code: code, err: err} }

// nodeFlags are the flags of every command that reads the configuration.
type nodeFlags struct {
	configPath string
	overrides  []config.Override
	verbosity  int
}

type overrideFlag struct {
	f   *nodeFlags
	key string // "" for --set KEY=VALUE
}

func (o overrideFlag) String() string { return "" }
func (o overrideFlag) Set(v string) error {
	key := o.key
	if key == "" {
		k, val, ok := strings.Cut(v, "=")
		if !ok {
			return fmt.Errorf("want KEY=VALUE (keys: %s)", strings.Join(config.Keys(), ", "))
		}
		key, v = k, val
	}
	if key == "bridges" && o.key != "" {
		// --bridge is repeatable: each adds one.
		for i := len(o.f.overrides) - 1; i >= 0; i-- {
			if o.f.overrides[i].Key == "bridges" {
				v = o.f.overrides[i].Value + "," + v
				break
			}
		}
	}
	o.f.overrides = append(o.f.overrides, config.Override{Key: key, Value: v})
	return nil
}

type verbosityFlag struct{ n *int }

func (v verbosityFlag) String() string   { return "" }
func (v verbosityFlag) IsBoolFlag() bool { return true }
func (v verbosityFlag) Set(s string) error {
	if b, err := strconv.ParseBool(s); err != nil || b {
		*v.n++
	}
	return nil
}

func addNodeFlags(fs *flag.FlagSet) *nodeFlags {
	f := &nodeFlags{}
	fs.StringVar(&f.configPath, "config", "", "configuration file (default "+config.Path()+")")
	fs.Var(overrideFlag{f, "data_dir"}, "data-dir", "data directory (default "+config.DefaultDataDir()+")")
	fs.Var(overrideFlag{f, "bridges"}, "bridge", "bootstrap node `ID@IP:PORT` (repeatable; replaces the file's bridges)")
	fs.Var(overrideFlag{f, "listen"}, "listen", "`IP:PORT` to accept links on (default "+config.DefaultListenAddr+")")
	fs.Var(overrideFlag{f, "http"}, "http", "local API `IP:PORT` (default "+config.DefaultHTTPAddr+")")
	fs.Var(overrideFlag{f, ""}, "set", "set any configuration `KEY=VALUE` (repeatable; e.g. tunnels.min_circuits=2)")
	fs.Var(verbosityFlag{&f.verbosity}, "v", "log more (-v info, -v -v debug)")
	return f
}

// isSet reports whether key was set by a flag, a VEIL_* variable or the
// configuration file, rather than left at its default.
func (f *nodeFlags) isSet(key string) bool {
	for _, o := range f.overrides {
		if o.Key == key {
			return true
		}
	}
	if os.Getenv(config.EnvName(key)) != "" {
		return true
	}
	path := f.configPath
	if path == "" {
		path = config.Path()
	}
	return config.Defined(path, key)
}

// path is the configuration file's path.
func (f *nodeFlags) path() string {
	if f.configPath != "" {
		return f.configPath
	}
	return config.Path()
}

// resolve builds the configuration: defaults, file, VEIL_* variables, flags.
func (f *nodeFlags) resolve() (config.Config, error) {
	path, explicit := f.configPath, f.configPath != ""
	if !explicit {
		path = config.Path()
	}
	c, err := config.Resolve(path, explicit, os.Getenv, f.overrides)
	if err != nil {
		return c, withCode(exitUsage, err)
	}
	switch {
	case f.verbosity >= 2:
		c.LogLevel = "debug"
	case f.verbosity == 1:
		c.LogLevel = "info"
	}
	return c, nil
}

func setupNode(fs *flag.FlagSet) func(context.Context, *env) error {
	nf := addNodeFlags(fs)
	return func(ctx context.Context, e *env) error {
		if len(e.args) != 0 {
			return errUsage
		}
		cfg, err := nf.resolve()
		if err != nil {
			return err
		}
		level := new(slog.LevelVar)
		level.Set(node.LevelOf(cfg.LogLevel))
		log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
		var n *node.Node
		reload := func() error {
			c, err := nf.resolve()
			if err == nil {
				err = n.Reload(c)
			}
			return err
		}
		n, err = node.Start(node.Options{Config: cfg, Log: log, LogLevel: level, ConfigFile: nf.path(), Reload: reload})
		if err != nil {
			return err
		}
		defer n.Close()
		fmt.Fprintf(e.stderr, "veil node %s (data in %s)\n", n.ID(), cfg.DataDirOrDefault())
		if bl := n.BridgeLine(); bl != "" {
			fmt.Fprintf(e.stderr, "  links on %s; others may use it as a bridge: %s\n", n.Addr(), bl)
		}
		if a := n.APIAddr(); a != "" {
			fmt.Fprintf(e.stderr, "  local API on http://%s/api/v1/\n", a)
			fmt.Fprintf(e.stderr, "  dashboard: %s\n", n.DashboardURL())
		}
		if a := n.ControlAddr(); a != "" {
			fmt.Fprintf(e.stderr, "  control port on %s (Tor's control protocol: nyx -i %s)\n", a, a)
		}
		if a := n.SOCKSAddr(); a != "" {
			fmt.Fprintf(e.stderr, "  SOCKS4a/5 on %s (http://<hash_name>.veil/ serves content)\n", a)
		}
		switch {
		case len(cfg.Bridges) == 0 && cfg.Anonymous:
			fmt.Fprintf(e.stderr, "  no bridge configured: an anonymous node learns the network only from its bridges (add one with --bridge ID@IP:PORT or the `bridges` key)\n")
		case len(cfg.Bridges) == 0:
			fmt.Fprintf(e.stderr, "  no bridge configured: this node waits for others to join it (add one with --bridge ID@IP:PORT or the `bridges` key)\n")
		case cfg.Anonymous:
			fmt.Fprintf(e.stderr, "  anonymous: links only to its bridges and its circuits' first hops\n")
		}
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					if err := reload(); err != nil {
						log.Error("reload refused", "err", err)
					} else {
						log.Warn("configuration reloaded")
					}
				}
			}
		}()
		if err := n.Run(ctx); err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "veil node: stopping\n")
		return nil
	}
}

// dialNode finds the node running on the configured data directory.
func dialNode(ctx context.Context, cfg config.Config) (*node.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return node.Dial(dctx, cfg.DataDirOrDefault(), cfg.HTTP)
}

func setupPut(fs *flag.FlagSet) func(context.Context, *env) error {
	nf := addNodeFlags(fs)
	mimeType := fs.String("type", "", "MIME type (default: from the file name's extension; video/mp2t with --live)")
	live := fs.Bool("live", false, "publish standard input as a live stream as it arrives (e.g. ffmpeg ... -f mpegts - | veil put --live)")
	pseudonym := fs.String("pseudonym", "", "sign with the key of pseudonym `NAME`, kept in the node's data directory (default: the node's `pseudonym` key, else a key for this content alone)")
	return func(ctx context.Context, e *env) error {
		if *live {
			return putLive(ctx, e, nf, *mimeType)
		}
		if len(e.args) != 1 {
			return errUsage
		}
		cfg, err := nf.resolve()
		if err != nil {
			return err
		}
		// The file is a bad argument when it cannot be read: say so before
		// looking for the node.
		f, err := os.Open(e.args[0])
		if err != nil {
			return withCode(exitUsage, err)
		}
		defer f.Close()
		if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
			return withCode(exitUsage, fmt.Errorf("%s: not a regular file", e.args[0]))
		}
		c, err := dialNode(ctx, cfg)
		if err != nil {
			if errors.Is(err, node.ErrNoNode) {
				return withCode(exitNoNode, fmt.Errorf("%w: publishing needs a node that keeps serving the content; start one with `veil node` (data directory %s)", err, cfg.DataDirOrDefault()))
			}
			return err
		}
		mt := *mimeType
		if mt == "" {
			mt = mime.TypeByExtension(filepath.Ext(e.args[0]))
		}
		if *pseudonym != "" && !config.ValidPseudonym(*pseudonym) {
			return withCode(exitUsage, fmt.Errorf("--pseudonym %q: want 1..64 letters, digits, \"-\" or \"_\"", *pseudonym))
		}
		r, err := c.PutAs(ctx, *pseudonym, mt, f)
		if err != nil {
			return err
		}
		if r.Warning != "" {
			fmt.Fprintf(e.stderr, "veil put: warning: %s\n", r.Warning)
		}
		fmt.Fprintln(e.stdout, r.HashName)
		return nil
	}
}

func setupGet(fs *flag.FlagSet) func(context.Context, *env) error {
	nf := addNodeFlags(fs)
	out := fs.String("o", "", "write the content to `FILE` (\"-\": standard output; default: the hash_name in the current directory)")
	tf := addTorrentFlags(fs)
	return func(ctx context.Context, e *env) error {
		if len(e.args) != 1 {
			return errUsage
		}
		if tf.isTorrentArg(e.args[0]) {
			cfg, err := nf.resolve()
			if err != nil {
				return err
			}
			return getTorrent(ctx, e, cfg, tf, e.args[0], *out, nf.isSet("anonymous"))
		}
		name, err := proto.ParseHashName(e.args[0])
		if err != nil {
			return withCode(exitUsage, fmt.Errorf("%q is not a hash_name: want the %d hex digits `veil put` prints, a magnet link, or --torrent INFOHASH", e.args[0], 2*proto.IDSize))
		}
		cfg, err := nf.resolve()
		if err != nil {
			return err
		}
		dst := *out
		if dst == "" {
			dst = name.String()
		}
		bar := newProgressBar(e.stderr)
		c, err := dialNode(ctx, cfg)
		switch {
		case err == nil:
			err = c.Get(ctx, name.String(), func(ev node.Event) { bar.update(ev.Held, ev.Total, ev.Size, ev.Resumed, ev.Attempt, ev.Rates, ev.Lost) })
			bar.finish(err)
			if err != nil {
				return fetchErr(err)
			}
			return writeOut(dst, e.stdout, func(w io.Writer) error {
				_, err := c.Content(ctx, name.String(), w)
				return err
			})
		case !errors.Is(err, node.ErrNoNode):
			return err
		}
		// No node runs here: an ephemeral client-only one for this fetch,
		// with a fresh identity; the cache in the data directory keeps
		// what it fetched, so an interrupted get resumes.
		n, stop, err := startEphemeral(ctx, e, cfg, nf.isSet("anonymous"))
		if err != nil {
			return err
		}
		defer stop()
		_, err = n.Fetch(ctx, name, func(p node.Progress) { bar.update(p.Held, p.Total, p.Size, p.Resumed, p.Attempt, p.Rates, p.Lost) })
		bar.finish(err)
		if err != nil {
			return fetchErr(err)
		}
		return writeOut(dst, e.stdout, func(w io.Writer) error {
			r, err := n.Open(ctx, name)
			if err != nil {
				return err
			}
			_, err = io.Copy(w, r)
			return err
		})
	}
}

func fetchErr(err error) error {
	if errors.Is(err, node.ErrNotFound) {
		return withCode(exitNotFound, err)
	}
	return err
}

// writeOut writes the content to dst ("-": stdout) through a temporary
// file renamed at the end, so a partial file never has the final name.
func writeOut(dst string, stdout io.Writer, copyTo func(io.Writer) error) error {
	if dst == "-" {
		return copyTo(stdout)
	}
	tmp := dst + ".part"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := copyTo(f); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

func setupStatus(fs *flag.FlagSet) func(context.Context, *env) error {
	nf := addNodeFlags(fs)
	asJSON := fs.Bool("json", false, "print the status as JSON")
	return func(ctx context.Context, e *env) error {
		if len(e.args) != 0 {
			return errUsage
		}
		cfg, err := nf.resolve()
		if err != nil {
			return err
		}
		st, cerr := statusViaControl(ctx, cfg)
		if cerr != nil {
			c, err := dialNode(ctx, cfg)
			if err != nil {
				if errors.Is(err, node.ErrNoNode) {
					return withCode(exitNoNode, fmt.Errorf("%w: start one with `veil node`", err))
				}
				return err
			}
			if st, err = c.Status(ctx); err != nil {
				return err
			}
			if !errors.Is(cerr, errNoControl) {
				fmt.Fprintf(e.stderr, "veil status: %v; read the status from the local API instead\n", cerr)
			}
		}
		if *asJSON {
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		}
		fmt.Fprintf(e.stdout, "node       %s\n", st.ID)
		if st.BridgeLine != "" {
			fmt.Fprintf(e.stdout, "bridge     %s\n", st.BridgeLine)
		}
		if u := node.DashboardURLOf(cfg.DataDirOrDefault()); u != "" {
			fmt.Fprintf(e.stdout, "dashboard  %s\n", u)
		}
		fmt.Fprintf(e.stdout, "links      %d\n", st.Links)
		fmt.Fprintf(e.stdout, "circuits   %d own (ready %.0f%%), %d carried for others\n", len(st.Circuits), 100*min(st.Ready, 1), st.Joined)
		if st.PoolError != "" && len(st.Circuits) == 0 {
			fmt.Fprintf(e.stdout, "           last build error: %s\n", st.PoolError)
		}
		fmt.Fprintf(e.stdout, "DHT        %d contacts, %d records held for others; %d node descriptors known\n", st.DHTSize, st.DHTRecords, st.Directory)
		fmt.Fprintf(e.stdout, "published  %d this session\n", st.Published)
		fmt.Fprintf(e.stdout, "transfers  %d\n", len(st.Transfers))
		for _, t := range st.Transfers {
			fmt.Fprintf(e.stdout, "  %s  %d/%d chunks, %s, attempt %d\n", t.HashName, t.Held, t.Total, humanBytes(float64(t.Size)), t.Attempts)
		}
		return nil
	}
}

func setupConfig(fs *flag.FlagSet) func(context.Context, *env) error {
	return func(ctx context.Context, e *env) error {
		if len(e.args) == 0 {
			return errUsage
		}
		switch e.args[0] {
		case "default":
			if len(e.args) != 1 {
				return errUsage
			}
			_, err := io.WriteString(e.stdout, config.DefaultFile)
			return err
		case "check":
			if len(e.args) > 2 {
				return errUsage
			}
			path, explicit := config.Path(), false
			if len(e.args) == 2 {
				path, explicit = e.args[1], true
			}
			if _, err := config.Load(path, !explicit); err != nil {
				return withCode(exitUsage, err)
			}
			fmt.Fprintf(e.stdout, "%s: ok\n", path)
			return nil
		case "path":
			fmt.Fprintln(e.stdout, config.Path())
			return nil
		}
		return errUsage
	}
}

// startEphemeral starts the client-only node a get uses when no node runs
// here: a fresh identity, no listener, API, control or SOCKS port,
// anonymous unless the user set anonymous, joined through the configured
// bridges; it returns once the node can build paths. stop ends it.
func startEphemeral(ctx context.Context, e *env, cfg config.Config, anonymousSet bool) (n *node.Node, stop func(), err error) {
	if len(cfg.Bridges) == 0 {
		return nil, nil, withCode(exitNoNode, fmt.Errorf("no running node and no bridge to start one: add a bridge with --bridge ID@IP:PORT or the `bridges` key in %s (a node's `veil status` prints its bridge line)", config.Path()))
	}
	cfg.Roles = config.Roles{}
	cfg.Listen, cfg.HTTP, cfg.Control.Listen, cfg.SOCKS = "", "", "", ""
	if !anonymousSet {
		cfg.Anonymous = true
	}
	if err := cfg.Validate(); err != nil {
		return nil, nil, withCode(exitUsage, err)
	}
	level := new(slog.LevelVar)
	level.Set(node.LevelOf(cfg.LogLevel))
	n, err = node.Start(node.Options{Config: cfg, Log: slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level})), LogLevel: level})
	if err != nil {
		return nil, nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	go n.Run(rctx)
	stop = func() {
		cancel()
		n.Close()
	}
	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	err = n.WaitPaths(wctx)
	wcancel()
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("joining the network through %s: %w", strings.Join(cfg.Bridges, ", "), err)
	}
	return n, stop, nil
}
