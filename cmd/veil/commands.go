package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
)

// version is set at link time with -ldflags "-X main.version=v0.1.0".
var version = "dev"

// command is one subcommand of veil.
type command struct {
	name    string
	args    string // what follows the flags, for the usage line
	summary string
	// setup declares the command's flags and returns the function that runs
	// it once flags are parsed.
	setup func(fs *flag.FlagSet) func(ctx context.Context, env *env) error
}

// env is what a running command may use instead of globals.
type env struct {
	args   []string // positional arguments after flags
	stdout io.Writer
	stderr io.Writer
}

// errUsage makes run print the command's usage and exit 2.
var errUsage = errors.New("usage")

func commands() []command {
	return []command{
		{name: "node", summary: "run a long-lived node (relay, ORDB, facilitator, bridge)", setup: setupNode},
		{name: "put", args: "FILE | --live", summary: "publish a file (or, with --live, standard input as a live stream) through the running node and print its hash_name", setup: setupPut},
		{name: "get", args: "HASH | MAGNET", summary: "fetch content (or a torrent, through a facilitator) anonymously through circuits", setup: setupGet},
		{name: "stream", args: "HASH", summary: "print a content's gateway URL for players and show its buffering (--play starts mpv or vlc)", setup: setupStream},
		{name: "status", summary: "show a running node's circuits, links and transfers", setup: setupStatus},
		{name: "config", args: "default | check [FILE] | path", summary: "print the default configuration file, or check one", setup: setupConfig},
		{name: "testnet", summary: "run a whole local network in one process: publish a video and a file, fetch them through circuits, show the dashboard", setup: setupTestnet},
		{name: "version", summary: "print veil's version", setup: setupVersion},
	}
}

// run parses args and runs one command; it returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		if len(args) > 1 {
			return run([]string{args[1], "--help"}, stdout, stderr)
		}
		printCommands(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	var cmd *command
	for _, c := range commands() {
		if c.name == args[0] {
			cmd = &c
			break
		}
	}
	if cmd == nil {
		fmt.Fprintf(stderr, "veil: unknown command %q (run `veil help` for the list)\n", args[0])
		return 2
	}
	fs := flag.NewFlagSet("veil "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	runCmd := cmd.setup(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: veil %s [flags] %s\n\n%s.\n", cmd.name, cmd.args, cmd.summary)
		var hasFlags bool
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintf(fs.Output(), "\nflags:\n")
			fs.PrintDefaults()
		}
		printExitCodes(fs.Output())
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return 0
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := runCmd(ctx, &env{args: fs.Args(), stdout: stdout, stderr: stderr})
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		fs.Usage()
		return 2
	default:
		var xe *exitError
		if errors.As(err, &xe) {
			fmt.Fprintf(stderr, "veil %s: %v\n", cmd.name, err)
			return xe.code
		}
		fmt.Fprintf(stderr, "veil %s: %v\n", cmd.name, err)
		return 1
	}
}

func printCommands(w io.Writer) {
	fmt.Fprintf(w, "veil: anonymous peer-to-peer content distribution\n\nusage: veil <command> [flags] [args]\n\ncommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun `veil <command> --help` for a command's flags.\n")
	printExitCodes(w)
}

func printExitCodes(w io.Writer) {
	fmt.Fprintf(w, "\nexit codes:\n  %d  success\n  %d  failure\n  %d  bad flags, arguments or configuration\n  %d  content not found (no provider)\n  %d  no running node (put, status), or no bridge to start one (get)\n",
		exitOK, exitFailure, exitUsage, exitNotFound, exitNoNode)
}

func setupVersion(fs *flag.FlagSet) func(context.Context, *env) error {
	return func(_ context.Context, e *env) error {
		if len(e.args) != 0 {
			return errUsage
		}
		fmt.Fprintf(e.stdout, "veil %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		if info, ok := debug.ReadBuildInfo(); ok {
			for _, s := range info.Settings {
				if strings.HasPrefix(s.Key, "vcs.") {
					fmt.Fprintf(e.stdout, "  %s=%s\n", s.Key, s.Value)
				}
			}
		}
		return nil
	}
}
