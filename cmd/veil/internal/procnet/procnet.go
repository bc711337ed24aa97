// Package procnet runs a network of `veil node` processes on 127.0.0.1,
// each with its own data directory and free ports: for `veil testnet
// --procs` and for the tests that drive veil as separate processes.
package procnet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"veil/cmd/veil/internal/node"
)

// NodeArgs are the flags every process gets: loopback only, free ports,
// two circuits each.
var NodeArgs = []string{"--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--set", "control.listen=127.0.0.1:0", "--set", "socks=127.0.0.1:0", "--set", "allow_private=true",
	"--set", "tunnels.min_circuits=2", "--set", "tunnels.max_circuits=2"}

// Net is a set of veil processes sharing a root directory, where each
// process's output goes to NAME.log.
type Net struct {
	Bin   string // the veil binary
	Root  string
	env   []string
	procs []*Proc
}

// New prepares a network of bin's processes under root. The processes
// see a configuration directory of their own (no file: every key at its
// default) and none of the caller's VEIL_* variables.
func New(bin, root string) *Net {
	env := []string{"XDG_CONFIG_HOME=" + filepath.Join(root, "config"), "XDG_DATA_HOME=" + filepath.Join(root, "xdgdata")}
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !strings.HasPrefix(k, "VEIL_") && !strings.HasPrefix(k, "XDG_") {
			env = append(env, kv)
		}
	}
	return &Net{Bin: bin, Root: root, env: env}
}

// Proc is one process.
type Proc struct {
	Name string
	Dir  string // its data directory ("" if none)
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
	err  error
}

// Spawn starts the binary with args, its output going to name.log.
func (n *Net) Spawn(name, dir string, args ...string) (*Proc, error) {
	logf, err := os.OpenFile(n.LogPath(name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(n.Bin, args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = n.env, logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &Proc{Name: name, Dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	n.procs = append(n.procs, p)
	return p, nil
}

// LogPath is where name's output goes.
func (n *Net) LogPath(name string) string { return filepath.Join(n.Root, name+".log") }

// Log returns name's output so far.
func (n *Net) Log(name string) string {
	b, _ := os.ReadFile(n.LogPath(name))
	return string(b)
}

// Node starts `veil node` on dir and waits (30 s at most) for its local API.
func (n *Net) Node(name, dir string, extra ...string) (*Proc, *node.Client, error) {
	p, err := n.Spawn(name, dir, append(append([]string{"node", "--data-dir", dir}, NodeArgs...), extra...)...)
	if err != nil {
		return nil, nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := node.Dial(ctx, dir, "")
		cancel()
		if err == nil {
			return p, c, nil
		}
		select {
		case <-p.done:
			return p, nil, fmt.Errorf("%s exited (%v):\n%s", name, p.err, n.Log(name))
		default:
		}
		if time.Now().After(deadline) {
			p.Stop(syscall.SIGKILL, 5*time.Second)
			return p, nil, fmt.Errorf("%s: local API not up after 30s (%v):\n%s", name, err, n.Log(name))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Close kills every process still running.
func (n *Net) Close() {
	for _, p := range n.procs {
		p.Stop(syscall.SIGKILL, 10*time.Second)
	}
}

// PID is the process's ID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is how the process ended (valid after Done).
func (p *Proc) Err() error { return p.err }

// Stop signals the process and waits for it to exit, at most wait (then
// kills it). It reports whether the process exited on the signal.
func (p *Proc) Stop(sig syscall.Signal, wait time.Duration) bool {
	select {
	case <-p.done:
		return true
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return true
	case <-time.After(wait):
		_ = p.cmd.Process.Kill()
		<-p.done
		return false
	}
}

// ErrTimeout: a process did not finish in time (it was killed).
var ErrTimeout = errors.New("procnet: process did not finish in time")

// Wait waits for the process to exit by itself, at most d (then kills
// it and returns ErrTimeout).
func (p *Proc) Wait(d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%w: %s after %v", ErrTimeout, p.Name, d)
	}
}
