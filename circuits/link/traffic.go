package link

import (
	"bytes"
	"net/netip"
	"slices"
	"sync/atomic"

	"veil/proto"
)

// traffic counts the bytes of the links' sockets, TLS records included.
// One atomic add per socket read or write (not per cell).
type traffic struct {
	read, written atomic.Uint64
}

// Traffic returns the bytes read from and written to the sockets of all
// links (handshakes and TLS overhead included) since NewLinks.
func (m *Links) Traffic() (read, written uint64) {
	return m.traffic.read.Load(), m.traffic.written.Load()
}

// PeerInfo is one open link as status displays list it.
type PeerInfo struct {
	ID      proto.NodeID
	Addr    netip.AddrPort // the peer's address as the socket sees it
	Inbound bool
}

// Peers returns the open links, one per peer (the one Lookup gives),
// ordered by peer ID.
func (m *Links) Peers() []PeerInfo {
	m.mu.Lock()
	ls := make([]*Link, 0, len(m.byID))
	for _, l := range m.byID {
		ls = append(ls, l)
	}
	m.mu.Unlock()
	out := make([]PeerInfo, 0, len(ls))
	for _, l := range ls {
		if l.Err() != nil {
			continue
		}
		ap, _ := netip.ParseAddrPort(l.RemoteAddr().String())
		out = append(out, PeerInfo{ID: l.Peer(), Addr: ap, Inbound: l.Inbound()})
	}
	slices.SortFunc(out, func(a, b PeerInfo) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	return out
}
