package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"time"

	"veil/circuits"
	"veil/cmd/veil/internal/config"
	"veil/facilitator"
	"veil/ordb"
	"veil/proto"
	"veil/window"
)

// facRole is the node's facilitator side (roles.facilitator): the
// freerider BitTorrent client, the service answering the ORDBs' circuits,
// and the optional read-only DHT client.
type facRole struct {
	client *facilitator.Client
	server *facilitator.Server
	dht    *facilitator.PassiveDHT
}

// startFacilitator starts the facilitator role and registers its service
// at the switch.
func (n *Node) startFacilitator() error {
	cfg := n.cfg.Load()
	fc := cfg.Facilitator
	ccfg := facilitator.DefaultConfig()
	ccfg.AllowPrivatePeers = cfg.AllowPrivate
	ccfg.Logger = n.log
	if d, err := fc.MetadataTimeoutDuration(); err == nil {
		ccfg.MetadataTimeout = d
	}
	if c, err := fc.CapacityBytes(); err == nil {
		ccfg.Capacity = c
	}
	for _, p := range fc.Peers {
		if ap, err := netip.ParseAddrPort(p); err == nil {
			ccfg.Peers = append(ccfg.Peers, ap)
		}
	}
	if fc.Blocklist != "" {
		f, err := os.Open(fc.Blocklist)
		if err != nil {
			return fmt.Errorf("facilitator.blocklist: %w", err)
		}
		bl, err := facilitator.ParseBlocklist(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("facilitator.blocklist %s: %w", fc.Blocklist, err)
		}
		ccfg.Blocklist = bl
	}
	r := &facRole{}
	if len(fc.DHTBootstrap) > 0 {
		var boot []netip.AddrPort
		for _, b := range fc.DHTBootstrap {
			if ap, err := netip.ParseAddrPort(b); err == nil {
				boot = append(boot, ap)
			}
		}
		d, err := facilitator.NewPassiveDHT(facilitator.DHTConfig{Bootstrap: boot, Blocklist: ccfg.Blocklist, AllowPrivate: cfg.AllowPrivate})
		if err != nil {
			return err
		}
		r.dht = d
		ccfg.DHT = d
	}
	var err error
	if r.client, err = facilitator.New(ccfg); err != nil {
		r.close()
		return err
	}
	if r.server, err = facilitator.NewServer(facilitator.ServerConfig{Fetcher: r.client, Logger: n.log}); err != nil {
		r.close()
		return err
	}
	n.fac = r
	n.sw.Handle(facilitator.ServiceDest, func(s *circuits.Stream) { r.server.Serve(s) })
	return nil
}

func (r *facRole) close() {
	if r.server != nil {
		r.server.Close()
	}
	if r.client != nil {
		r.client.Close()
	}
	if r.dht != nil {
		r.dht.Close()
	}
}

// runFacilitator stores the node's F-flagged provider record under
// ordb.FacilitatorKey, retrying until it is stored (the DHT republishes
// it from then on), so that ORDBs find this facilitator.
func (n *Node) runFacilitator(ctx context.Context) {
	for wait := time.Second; ; wait = min(2*wait, time.Minute) {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		res, err := n.dht.Provide(pctx, ordb.FacilitatorKey, proto.MaxPieces, true)
		cancel()
		if err == nil && res.Stored > 0 {
			n.log.Info("facilitator record stored", "nodes", res.Stored)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// facilitatorFinder is the ORDB service's way to facilitators: the
// configured ones (facilitator.known), then those with an F-flagged
// record under ordb.FacilitatorKey.
func (n *Node) facilitatorFinder() (*ordb.FacilitatorFinder, error) {
	var known []proto.ProviderRecord
	for _, b := range n.cfg.Load().Facilitator.Known {
		if k, err := parseKnown(b); err == nil {
			known = append(known, k)
		}
	}
	return ordb.NewFacilitatorFinder(ordb.FinderConfig{Self: n.id.ID, DHT: relayDHT{n}, Builder: facBuilder{n}, Configured: known})
}

func parseKnown(s string) (proto.ProviderRecord, error) {
	b, err := config.ParseBridge(s)
	if err != nil {
		return proto.ProviderRecord{}, err
	}
	return proto.ProviderRecord{Key: ordb.FacilitatorKey, ORDB: b.ID, Addr: b.Addr, Facilitator: true}, nil
}

// facBuilder builds the ORDB service's circuits to facilitators: one hop,
// like those to other ORDBs (both ends are public; the requester is
// hidden behind its own circuit to the ORDB).
type facBuilder struct{ n *Node }

type facCircuit struct{ c *circuits.Circuit }

func (f facCircuit) OpenStream(ctx context.Context) (ordb.CellStream, error) {
	return f.c.OpenStream(ctx, facilitator.ServiceDest)
}
func (f facCircuit) Done() <-chan struct{} { return f.c.Done() }
func (f facCircuit) Close() error          { return f.c.Close() }

func (b facBuilder) BuildToFacilitator(ctx context.Context, rec proto.ProviderRecord) (ordb.ORDBCircuit, error) {
	d, ok := b.n.dir.Get(rec.ORDB)
	if !ok || d.Flags&proto.FlagFacilitator == 0 {
		if rec.Addr.IsValid() {
			b.n.askDescriptor(ctx, proto.DHTContact{ID: rec.ORDB, Addr: rec.Addr})
		}
		return nil, fmt.Errorf("node: no descriptor of facilitator %s", rec.ORDB.Short())
	}
	c, err := b.n.sw.Build(ctx, []proto.NodeDescriptor{d})
	if err != nil {
		return nil, err
	}
	return facCircuit{c}, nil
}

// TorrentRequest is a fetch of a torrent by magnet link or infohash.
type TorrentRequest struct {
	Target string // magnet link, or infohash (40 hex or 32 base32)
	// File chooses one file by path; UseIndex with Index by index.
	File     string
	UseIndex bool
	Index    int
	// Progress, if set, gets bytes written and the total.
	Progress func(done, total int64)
}

// ErrBadTarget wraps a magnet link or infohash that does not parse.
var ErrBadTarget = errors.New("node: bad magnet link or infohash")

// FetchTorrent fetches a torrent through the node's own circuits to its
// ORDBs, which ask facilitators; the node never talks to BitTorrent
// itself, and checks the info dictionary and every piece hash before
// writing to w. The BitTorrent swarm sees only the facilitator.
func (n *Node) FetchTorrent(ctx context.Context, req TorrentRequest, w io.Writer) (facilitator.GetResult, error) {
	target, err := facilitator.ParseTarget(req.Target)
	if err != nil {
		return facilitator.GetResult{}, fmt.Errorf("%w: %w", ErrBadTarget, err)
	}
	ordbs := n.ownORDBs()
	if len(ordbs) == 0 {
		return facilitator.GetResult{}, fmt.Errorf("%w (%d nodes known)", errNoORDB, n.dir.Len())
	}
	gc := &getCircuits{n: n, ordbs: ordbs, used: map[proto.NodeID]int{}, rng: mrand.New(mrand.NewPCG(mrand.Uint64(), mrand.Uint64())),
		circs: make(map[window.CircuitID]*getCirc)}
	defer gc.closeAll()
	ids, err := gc.buildAll(ctx, 4)
	if err != nil {
		return facilitator.GetResult{}, err
	}
	open := func(ctx context.Context, worker int) (facilitator.Stream, error) {
		gc.mu.Lock()
		c := gc.circs[ids[worker%len(ids)]]
		gc.mu.Unlock()
		if c == nil {
			return nil, errors.New("node: circuit gone")
		}
		return c.c.OpenStream(ctx, ordb.ORDBDest)
	}
	return facilitator.Get(ctx, facilitator.GetConfig{
		Target: target, File: req.File, UseIndex: req.UseIndex, FileIndex: req.Index,
		Open: open, Workers: len(ids), Progress: req.Progress,
	}, w)
}
