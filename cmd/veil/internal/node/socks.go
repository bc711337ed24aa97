package node

import (
	"context"
	"errors"
	"net"
	"net/http"

	"veil/circuits"
	"veil/cmd/veil/internal/gateway"
	"veil/cmd/veil/internal/socks"
)

// The SOCKS port: <hash_name>.veil hosts are answered by the node's own
// content handler (an HTTP server on the far side of the SOCKS stream);
// any other host goes through a circuit to an exit, isolated by the
// client's SOCKS credentials (exits.Dial). Nothing is resolved here.

// ContentHandler serves GET /content/<hash_name> (socksContent: the
// gateway's handler). The SOCKS port maps http://<hash_name>.veil/ onto it.
type ContentHandler = http.Handler

// startSOCKS listens on addr and serves SOCKS clients until Close.
func (n *Node) startSOCKS(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	cfg := socks.DefaultConfig()
	cfg.Log = n.log
	cfg.Content = veilHosts(n.content)
	cfg.Dial = n.reportDial(n.dialExit) // STREAM events on the control port
	n.socks = socks.New(ln, cfg)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.socks.Serve(); err != nil {
			n.log.Error("socks port", "err", err)
		}
	}()
	return nil
}

// SOCKSAddr is where the SOCKS port listens ("" when off).
func (n *Node) SOCKSAddr() string {
	if n.socks == nil {
		return ""
	}
	return n.socks.Addr().String()
}

// NewIdentity makes later SOCKS streams use new exit circuits (NEWNYM).
func (n *Node) NewIdentity() {
	if n.exits != nil {
		n.exits.NewIdentity()
	}
}

// dialExit opens a stream for req through a circuit to an exit and turns
// the exit's refusals into SOCKS replies.
func (n *Node) dialExit(ctx context.Context, req socks.Request) (net.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(n.ctx, cancel)
	defer stop()
	s, err := n.exits.Dial(ctx, req.IsolationKey(), req.Dest())
	if err == nil {
		return s, nil
	}
	var re *circuits.RefusedError
	switch {
	case errors.As(err, &re):
		switch re.Reason {
		case circuits.EndExitPolicy, circuits.EndNoService:
			return nil, errors.Join(socks.ErrNotAllowed, err)
		case circuits.EndResolveFailed, circuits.EndNoRoute:
			return nil, errors.Join(socks.ErrHostUnreachable, err)
		case circuits.EndConnectRefused:
			return nil, errors.Join(socks.ErrConnectionRefused, err)
		case circuits.EndTimeout:
			return nil, errors.Join(context.DeadlineExceeded, err)
		}
	case errors.Is(err, circuits.ErrNoExit):
		return nil, errors.Join(socks.ErrNetworkUnreachable, err)
	}
	return nil, err
}

// veilHosts serves http://<hash_name>.veil/ as GET /content/<hash_name>
// of h; other paths are not found.
func veilHosts(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ok, err := socks.VeilHost(r.Host)
		if !ok || err != nil || r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/content/" + name.String()
		r2.URL.RawPath = ""
		h.ServeHTTP(w, r2)
	})
}

// socksContent is the streaming gateway's handler for the SOCKS port's
// .veil hosts: content is served while it downloads, with ranges, from
// the fetch the gateway shares with every request for it. The SOCKS port
// is the client's own (loopback, like the local API), and the stream
// names its content: no cookie is asked.
func (n *Node) socksContent() http.Handler {
	return gateway.New(gateway.Config{Source: gatewaySource{n}, LookupTimeout: gatewayLookupTimeout, Log: n.log})
}
