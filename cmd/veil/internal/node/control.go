package node

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"sync/atomic"

	"veil/circuits"
	"veil/cmd/veil/internal/config"
	"veil/cmd/veil/internal/control"
	"veil/proto"
)

// The node's side of the control port: the Backend it answers through,
// and the events it forwards.

// teeLog makes the node log through a control.LogTee when the control
// port is on, so controllers get the node's records as events.
func (n *Node) teeLog(cfg config.Config) {
	if cfg.Control.Listen == "" {
		return
	}
	n.logTee = control.NewLogTee(n.log.Handler())
	n.ctlLog = n.log // the server's own messages must not loop back to it
	n.log = slog.New(n.logTee)
}

// startControl starts the control port if configured.
func (n *Node) startControl(cfg config.Config, opts Options) error {
	if cfg.Control.Listen == "" {
		return nil
	}
	s, err := control.Start(control.Config{
		Listen:         cfg.Control.Listen,
		DataDir:        n.dataDir,
		HashedPassword: cfg.Control.HashedPassword,
		NullAuth:       cfg.Control.NullAuth,
		Backend:        controlBackend{n, opts.ConfigFile, opts.Reload},
		LogTee:         n.logTee,
		Log:            n.ctlLog,
	})
	if err != nil {
		return err
	}
	n.ctl.Store(s)
	return nil
}

// ControlAddr is where the control port listens ("" when off).
func (n *Node) ControlAddr() string {
	if s := n.ctl.Load(); s != nil {
		return s.Addr()
	}
	return ""
}

// circuitEvent is the switch's event hook: it forwards to the control port.
func (n *Node) circuitEvent(ev circuits.Event) {
	if s := n.ctl.Load(); s != nil {
		s.CircuitEvent(ev)
	}
}

// streamIDs numbers the node's own streams for STREAM events.
var streamIDs atomic.Uint64

// streamEvent reports a stream of the node's own to the control port.
func (n *Node) streamEvent(st control.Stream) {
	n.ctl.Load().StreamEvent(st) // nil-safe
}

// controlBackend is the node as the control port sees it.
type controlBackend struct {
	n          *Node
	configFile string
	reload     func() error
}

func (b controlBackend) ID() proto.NodeID      { return b.n.id.ID }
func (b controlBackend) Addr() netip.AddrPort  { return b.n.addr }
func (b controlBackend) Config() config.Config { return *b.n.cfg.Load() }
func (b controlBackend) ConfigFile() string    { return b.configFile }
func (b controlBackend) NewNym()               { b.n.pool.Renew() }
func (b controlBackend) Shutdown()             { b.n.cancel() }

func (b controlBackend) Traffic() (uint64, uint64) { return b.n.links.Traffic() }

func (b controlBackend) SetConfig(c config.Config) error { return b.n.Reload(c) }

func (b controlBackend) Reload() error {
	if b.reload == nil {
		return errors.New("this node was not started from a configuration file")
	}
	return b.reload()
}

func (b controlBackend) Links() []control.Link {
	ps := b.n.links.Peers()
	out := make([]control.Link, len(ps))
	for i, p := range ps {
		out[i] = control.Link{Peer: p.ID, Addr: p.Addr.String()}
	}
	return out
}

func (b controlBackend) Status(ctx context.Context) ([]byte, error) {
	return json.Marshal(b.n.Status(ctx))
}
