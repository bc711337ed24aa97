package node

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"veil/circuits"
	"veil/cmd/veil/internal/config"
	"veil/cmd/veil/internal/control"
	"veil/cmd/veil/internal/socks"
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

// reportDial wraps the SOCKS port's dial so that its streams show on the
// control port as STREAM events.
func (n *Node) reportDial(dial func(context.Context, socks.Request) (net.Conn, error)) func(context.Context, socks.Request) (net.Conn, error) {
	return func(ctx context.Context, req socks.Request) (net.Conn, error) {
		if n.ctl.Load() == nil {
			return dial(ctx, req)
		}
		st := control.Stream{ID: streamIDs.Add(1), Status: control.StreamNew, Target: req.Dest()}
		n.streamEvent(st)
		c, err := dial(ctx, req)
		if err != nil {
			st.Status, st.Reason = control.StreamFailed, "MISC"
			n.streamEvent(st)
			return nil, err
		}
		if a, ok := c.LocalAddr().(circuits.StreamAddr); ok {
			st.Circuit = a.Circuit
		}
		st.Status = control.StreamSucceeded
		n.streamEvent(st)
		return &reportedConn{Conn: c, n: n, st: st}, nil
	}
}

// reportedConn tells the control port when a SOCKS stream closes.
type reportedConn struct {
	net.Conn
	n    *Node
	st   control.Stream
	once sync.Once
}

func (r *reportedConn) Close() error {
	r.once.Do(func() {
		r.st.Status, r.st.Reason = control.StreamClosed, "DONE"
		r.n.streamEvent(r.st)
	})
	return r.Conn.Close()
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
func (b controlBackend) SOCKSAddr() string     { return b.n.SOCKSAddr() }
func (b controlBackend) Shutdown()             { b.n.cancel() }

func (b controlBackend) Traffic() (uint64, uint64) { return b.n.links.Traffic() }

// NewNym gives new streams fresh circuits: the pool's, and the SOCKS
// port's exit circuits.
func (b controlBackend) NewNym() {
	b.n.pool.Renew()
	b.n.NewIdentity()
}

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

func (b controlBackend) Relays() []control.Relay {
	ds := b.n.dir.Nodes()
	out := make([]control.Relay, 0, len(ds))
	for _, d := range ds {
		r := control.Relay{ID: d.ID, Flags: d.Flags, Published: time.Unix(int64(d.ValidAfter), 0)}
		if len(d.Addrs) > 0 {
			r.Addr = d.Addrs[0]
		}
		out = append(out, r)
	}
	return out
}

func (b controlBackend) Status(ctx context.Context) ([]byte, error) {
	return json.Marshal(b.n.Status(ctx))
}

// DataDir is the node's data directory (the control cookie is there).
func (n *Node) DataDir() string { return n.dataDir }
