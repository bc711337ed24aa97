package circuits

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"

	"veil/proto"
)

// An exit stream's BEGIN names "HOST:PORT": an IP literal (IPv6 in
// brackets) or a DNS name, which the exit resolves itself, so that the
// origin never asks a resolver anything. Every address the name resolves
// to passes the exit policy before any is dialled; the first allowed one
// that answers is used.

// exitTakes reports whether this node would try BEGIN dest as an exit
// stream: it is an exit with a policy, and dest is HOST:PORT. The policy
// is applied in serveExit, after resolution, off the circuit goroutine.
func (sw *Switch) exitTakes(dest string) bool {
	if sw.cfg.Flags&proto.FlagExit == 0 || sw.cfg.ExitPolicy == nil {
		return false
	}
	_, _, ok := SplitExitDest(dest)
	return ok
}

// SplitExitDest splits an exit destination "HOST:PORT" into a host (an IP
// literal or a DNS name of letters, digits, '-', '_' and dots, at most 253
// bytes) and a port of 1..65535.
func SplitExitDest(dest string) (host string, port uint16, ok bool) {
	h, p, err := net.SplitHostPort(dest)
	if err != nil || h == "" {
		return "", 0, false
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 || p != strconv.FormatUint(n, 10) {
		return "", 0, false
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Zone() != "" {
			return "", 0, false
		}
		return h, uint16(n), true
	}
	if !validHostname(h) {
		return "", 0, false
	}
	return h, uint16(n), true
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// exitAddrs resolves host at this exit and keeps the addresses the policy
// allows with port; the END reason says why there are none.
func (sw *Switch) exitAddrs(ctx context.Context, host string, port uint16) ([]netip.AddrPort, uint8) {
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		low := strings.ToLower(strings.TrimSuffix(host, "."))
		if strings.HasSuffix(low, ".veil") || strings.HasSuffix(low, ".onion") {
			return nil, EndResolveFailed // names of anonymous services never reach a resolver
		}
		resolve := sw.cfg.ExitResolve
		if resolve == nil {
			resolve = func(ctx context.Context, h string) ([]netip.Addr, error) {
				return net.DefaultResolver.LookupNetIP(ctx, "ip", h)
			}
		}
		var err error
		if addrs, err = resolve(ctx, host); err != nil || len(addrs) == 0 {
			return nil, EndResolveFailed
		}
	}
	var ok []netip.AddrPort
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a.Unmap(), port)
		if sw.cfg.ExitPolicy(ap) {
			ok = append(ok, ap)
		}
	}
	if len(ok) == 0 {
		return nil, EndExitPolicy
	}
	return ok, 0
}

// serveExit runs the exit stream s to dest: it resolves and checks the
// destination, dials it (both bounded by ExtendTimeout), answers CONNECTED
// or END with the reason, and then copies between the stream and the
// connection until either ends. It runs in the stream's own goroutine,
// never the circuit's.
func (e *endpoint) serveExit(s *Stream, dest string) {
	host, port, _ := SplitExitDest(dest) // exitTakes checked it
	ctx, cancel := context.WithTimeout(e.exitContext(), e.sw.cfg.ExtendTimeout)
	defer cancel()
	addrs, reason := e.sw.exitAddrs(ctx, host, port)
	var conn net.Conn
	for _, ap := range addrs {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", ap.String())
		if err == nil {
			conn = c
			break
		}
		reason = dialReason(err)
	}
	if conn == nil {
		e.mu.Lock()
		s.peerEnded = true // nothing more to send: END says why
		e.mu.Unlock()
		_ = e.sendControl(lastHop, false, proto.RelayEnd, s.id, []byte{reason})
		return
	}
	e.mu.Lock()
	s.startCells = e.sw.cfg.ExitStartCells
	e.mu.Unlock()
	if err := e.sendControl(lastHop, false, proto.RelayConnected, s.id, nil); err != nil {
		conn.Close()
		return
	}
	e.sw.yield() // CONNECTED leaves before the copying starts
	bridge(s, conn)
}

// exitContext returns the circuit's context for exit streams: the
// circuit closing cancels it, and with it their resolutions and dials.
// Deriving from it takes no goroutine per stream (a watcher of e.done
// would: one more goroutine to start between BEGIN and CONNECTED).
func (e *endpoint) exitContext() context.Context {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.exitCtx == nil {
		e.exitCtx, e.exitCancel = context.WithCancel(context.Background())
		if e.closed {
			e.exitCancel()
		}
	}
	return e.exitCtx
}

// dialReason is the END reason for a failed dial, as Tor gives it.
func dialReason(err error) uint8 {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return EndConnectRefused
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return EndNoRoute
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return EndTimeout
	}
	return EndMisc
}

// bridge copies between an exit stream and its TCP connection until either
// side ends, then closes both.
func bridge(s *Stream, conn net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(conn, s) // until the origin ends the stream or the circuit dies
		conn.Close()
	}()
	copyHeadFirst(s, conn, s.e.sw.headStart)
	s.Close()
	conn.Close()
	<-done
}

// copyHeadFirst copies what the destination sends (src) to the exit
// stream (dst), its head alone: the first read takes at most one cell's
// data, and once that cell is queued on the link, headStart (the
// switch's ExitHeadStart) lets the link's writer send it on its own and
// the next hops pass it on before anything more is read. Read whole, a
// bulk response's first read is 32 KiB, 66 cells the link sends in one
// batch, and each hop reads, relays and writes all of them before
// passing the first on: the response's first bytes (an HTTP status line)
// reached the origin behind three hops' worth of that work. The rest is
// copied as before.
func copyHeadFirst(dst io.Writer, src io.Reader, headStart func()) {
	var head [proto.RelayDataSize]byte
	n, err := src.Read(head[:])
	if n > 0 {
		if _, werr := dst.Write(head[:n]); werr != nil {
			return
		}
		headStart()
	}
	if err != nil {
		return
	}
	io.Copy(dst, src)
}
