package circuits

import (
	"io"
	"net"
	"net/netip"

	"veil/proto"
)

// exitTo returns the TCP destination a BEGIN for dest may open from this
// node, or the zero AddrPort if dest is no "ip:port" or the exit policy
// refuses it.
func (sw *Switch) exitTo(dest string) netip.AddrPort {
	if ap, err := netip.ParseAddrPort(dest); err == nil && sw.exitAllows(ap) {
		return ap
	}
	return netip.AddrPort{}
}

// serveExit runs the exit stream s: it dials ap (bounded by
// ExtendTimeout), answers CONNECTED or END CONNECTREFUSED, and then copies
// between the stream and the connection until either ends. It runs in the
// stream's own goroutine, never the circuit's.
func (e *endpoint) serveExit(s *Stream, ap netip.AddrPort) {
	d := net.Dialer{Timeout: e.sw.cfg.ExtendTimeout}
	conn, err := d.Dial("tcp", ap.String())
	if err != nil {
		e.mu.Lock()
		s.peerEnded = true // nothing more to send: END says why
		e.mu.Unlock()
		_ = e.sendControl(lastHop, false, proto.RelayEnd, s.id, []byte{EndConnectRefused})
		return
	}
	if err := e.sendControl(lastHop, false, proto.RelayConnected, s.id, nil); err != nil {
		conn.Close()
		return
	}
	bridge(s, conn)
}

// exitAllows reports whether this node opens TCP connections to ap.
func (sw *Switch) exitAllows(ap netip.AddrPort) bool {
	return sw.cfg.Flags&proto.FlagExit != 0 && sw.cfg.ExitPolicy != nil && sw.cfg.ExitPolicy(ap)
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
	io.Copy(s, conn)
	s.Close()
	conn.Close()
	<-done
}
