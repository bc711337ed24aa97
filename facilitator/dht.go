package facilitator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/anacrolix/dht/v2"
	"github.com/anacrolix/dht/v2/krpc"
	alog "github.com/anacrolix/log"
)

// DHTConfig configures a PassiveDHT.
type DHTConfig struct {
	// Listen is the UDP address queries are sent from. "": ":0".
	Listen string
	// Bootstrap are the DHT nodes a search starts from (IP:PORT only:
	// resolving the usual router host names would tell a resolver that
	// this machine runs a BitTorrent DHT client).
	Bootstrap []netip.AddrPort
	// Blocklist addresses are neither queried nor returned as peers.
	Blocklist *Blocklist
	// AllowPrivate keeps loopback and private peers (tests on 127.0.0.1).
	AllowPrivate bool
	// SearchTimeout bounds one search. 0: 30 s.
	SearchTimeout time.Duration
}

// PassiveDHT searches the BitTorrent DHT for a torrent's peers without
// taking part in it: the node is read-only (BEP 43: its queries carry
// "ro", and it answers no query), and a search sends get_peers only,
// never announce_peer, so no DHT node ever lists the facilitator as a peer
// of anything. It is the Client's PeerFinder.
//
// It needs a UDP socket to send its queries from; that socket answers
// nothing, but it is bound (a port scan sees it as open|filtered).
type PassiveDHT struct {
	cfg DHTConfig
	s   *dht.Server
}

var _ PeerFinder = (*PassiveDHT)(nil)

// NewPassiveDHT starts a read-only DHT client.
func NewPassiveDHT(cfg DHTConfig) (*PassiveDHT, error) {
	if len(cfg.Bootstrap) == 0 {
		return nil, errors.New("facilitator: a passive DHT needs bootstrap nodes (IP:PORT)")
	}
	if cfg.Listen == "" {
		cfg.Listen = ":0"
	}
	if cfg.SearchTimeout == 0 {
		cfg.SearchTimeout = 30 * time.Second
	}
	pc, err := net.ListenPacket("udp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("facilitator: DHT socket: %w", err)
	}
	sc := dht.NewDefaultServerConfig()
	sc.Conn = pc
	sc.Passive = true
	sc.NoSecurity = true
	boot := append([]netip.AddrPort(nil), cfg.Bootstrap...)
	sc.StartingNodes = func() ([]dht.Addr, error) {
		var out []dht.Addr
		for _, b := range boot {
			out = append(out, dht.NewAddr(net.UDPAddrFromAddrPort(b)))
		}
		return out, nil
	}
	// Queries on the socket are not answered (Passive); count and drop
	// them here so no handler ever sees them.
	sc.OnQuery = func(*krpc.Msg, net.Addr) bool { return false }
	sc.OnAnnouncePeer = nil
	if cfg.Blocklist != nil {
		sc.IPBlocklist = ranger{cfg.Blocklist}
	}
	l := alog.NewLogger("dht")
	l.SetHandlers(alog.DiscardHandler)
	sc.Logger = l
	s, err := dht.NewServer(sc)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("facilitator: starting the DHT client: %w", err)
	}
	return &PassiveDHT{cfg: cfg, s: s}, nil
}

// FindPeers runs one get_peers search for ih and sends the peers found, in
// batches, until the search ends, SearchTimeout passes or ctx ends.
func (d *PassiveDHT) FindPeers(ctx context.Context, ih InfoHash) <-chan []netip.AddrPort {
	out := make(chan []netip.AddrPort)
	go func() {
		defer close(out)
		ctx, cancel := context.WithTimeout(ctx, d.cfg.SearchTimeout)
		defer cancel()
		// No AnnouncePeer option: the traversal only asks get_peers.
		a, err := d.s.AnnounceTraversal(ih)
		if err != nil {
			return
		}
		defer a.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case pv, ok := <-a.Peers:
				if !ok {
					return
				}
				var batch []netip.AddrPort
				for _, p := range pv.Peers {
					ap, ok := netip.AddrFromSlice(p.IP)
					if !ok || p.Port <= 0 || p.Port > 65535 {
						continue
					}
					ap = ap.Unmap()
					if d.cfg.Blocklist.Blocked(ap) || (!d.cfg.AllowPrivate && (!ap.IsGlobalUnicast() || ap.IsPrivate())) {
						continue
					}
					batch = append(batch, netip.AddrPortFrom(ap, uint16(p.Port)))
				}
				if len(batch) == 0 {
					continue
				}
				select {
				case out <- batch:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// LocalAddr is the UDP address queries leave from.
func (d *PassiveDHT) LocalAddr() net.Addr { return d.s.Addr() }

// Close stops the DHT client and closes its socket.
func (d *PassiveDHT) Close() error {
	d.s.Close()
	return nil
}
