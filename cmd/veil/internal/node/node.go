// Package node is one long-lived veil node: links, the circuit switch, the
// DHT over links, a directory of node descriptors learned through it, a
// pool of circuits, the ORDB service, the stores and the local HTTP API.
// The veil command runs it (`veil node`), or an ephemeral client-only one
// for the length of a `veil get`.
//
// What the node serves and what it fetches are kept apart: published
// content goes into served.db, which only the node's Peer answers from,
// and only to its own ORDBs on the circuits it advertised it on; fetched
// content goes into cache.db, which no peer can query. The node's ORDB
// service (ordb.Relay) serves nothing of its own: it relays for others.
package node

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"veil/chunkstore"
	"veil/circuits"
	"veil/circuits/exitpolicy"
	"veil/circuits/link"
	"veil/cmd/veil/internal/config"
	"veil/cmd/veil/internal/control"
	"veil/cmd/veil/internal/socks"
	"veil/kademlia"
	"veil/ordb"
	"veil/proto"
)

// Files of the data directory.
const (
	ServedFile  = "served.db"  // content this node published: the ORDB serves it
	CacheFile   = "cache.db"   // content fetched for the user: never served
	CookieFile  = "api.cookie" // the local API's secret, mode 0600
	APIAddrFile = "api.addr"   // where the local API listens while the node runs
)

// ORDBDest is the stream destination at which nodes serve DB_* queries.
const ORDBDest = ordb.ORDBDest

// descValidity is how long the node's descriptor holds; it is re-signed
// at half that.
const descValidity = 24 * time.Hour

// descSends bounds the descriptor messages being sent at once.
const descSends = 64

// Options are what a Node is made from besides the configuration file.
type Options struct {
	Config config.Config
	Log    *slog.Logger // nil: discard
	// LogLevel, if set, is the level Reload adjusts.
	LogLevel *slog.LevelVar
	// Observer, if set, is told what the node sees (observe.go): for
	// tests that check who learns what. nil in production, at no cost.
	Observer Observer
	// ConfigFile is the configuration file's path, for controllers.
	ConfigFile string
	// Reload, if set, reads the configuration again and applies it
	// (the control port's SIGNAL RELOAD; SIGHUP does the same).
	Reload func() error
}

// Node is a running veil node. Start makes one; Close stops it.
type Node struct {
	cfg     atomic.Pointer[config.Config]
	dataDir string
	log     *slog.Logger
	level   *slog.LevelVar
	now     func() time.Time

	id    *circuits.Identity
	links *link.Links
	guard *dialGuard // the anonymous node's dial policy (anonymous.go)
	obs   Observer   // nil but in tests
	sw    *circuits.Switch
	dht   *kademlia.Node
	// dhtReady is dht for the link handlers, which may run before Start
	// has made it.
	dhtReady atomic.Pointer[kademlia.Node]
	dir      *directory
	pool     *circuits.Pool
	guards   *circuits.Guards  // first hops of all our circuits (limits.go)
	served   *chunkstore.Store // nil for a node that cannot publish
	// relay is the ORDB service (nil for a node that is not an ORDB),
	// peer the side that advertises served through peerCircs (nil when
	// served is).
	relay     *ordb.Relay
	peer      *ordb.Peer
	peerCircs *peerCircuits
	cache     *chunkstore.Store
	fac       *facRole       // the facilitator role; nil when off
	addr      netip.AddrPort // where others reach us; invalid for a client
	desc      atomic.Pointer[proto.NodeDescriptor]

	api     *apiServer
	metrics *nodeMetrics // metrics.go
	streams streams      // the gateway's shared fetches
	// fetchLimit, if set, caps what fetches read (tests; see rateLimit).
	fetchLimit *rateLimit

	// The control port (control.go): nil when off.
	ctl    atomic.Pointer[control.Server]
	logTee *control.LogTee
	ctlLog *slog.Logger

	// exits opens SOCKS streams through exit circuits; socks is the SOCKS
	// port (nil when off); content serves /content/<hash_name> to it.
	exits   *circuits.ExitDialer
	socks   *socks.Server
	content ContentHandler
	// exitPolicy is the policy an exit applies (exit.policy, which
	// Reload changes); nil when the node is no exit.
	exitPolicy atomic.Pointer[exitpolicy.Policy]
	// writeLimit paces the links' writes (relay_bandwidth_rate, which
	// Reload changes); nil when the node started without a limit.
	writeLimit *link.WriteLimit

	lastBootstrap time.Time // owned by Run

	descSem chan struct{}  // bounds descriptor sends in flight (sendDesc)
	descWG  sync.WaitGroup // those sends; they end when the links close

	mu        sync.Mutex // guards transfers and published
	transfers map[proto.HashName]*transfer
	published int

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed sync.Once
}

// Start brings a node up: identity, stores, links, switch, DHT, pool and
// API. Run bootstraps and keeps it going; Close stops it.
func Start(opts Options) (_ *Node, err error) {
	cfg := opts.Config
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{
		dataDir:   cfg.DataDirOrDefault(),
		log:       opts.Log,
		level:     opts.LogLevel,
		now:       time.Now,
		transfers: map[proto.HashName]*transfer{},
		descSem:   make(chan struct{}, descSends),
		obs:       opts.Observer,
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	n.teeLog(cfg)
	n.cfg.Store(&cfg)
	n.dir = newDirectory(n.now)
	n.ctx, n.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if err := circuits.CheckDataDir(n.dataDir); err != nil {
		return nil, err
	}
	// A node that offers nothing shows a fresh link identity each session:
	// nothing ties its sessions together. Relays and ORDBs keep theirs,
	// their ID being their DHT position.
	if cfg.ClientOnly() {
		n.id, err = circuits.NewEphemeralIdentity()
	} else {
		n.id, err = circuits.LoadOrCreateIdentity(n.dataDir)
	}
	if err != nil {
		return nil, err
	}
	if n.cache, err = chunkstore.Open(chunkstore.DefaultConfig(filepath.Join(n.dataDir, CacheFile))); err != nil {
		return nil, fmt.Errorf("fetch cache: %w", err)
	}
	// An ORDB publishes; so does an anonymous client, behind its circuits.
	if cfg.Roles.ORDB || cfg.Anonymous {
		if n.served, err = chunkstore.Open(chunkstore.DefaultConfig(filepath.Join(n.dataDir, ServedFile))); err != nil {
			return nil, fmt.Errorf("served store: %w", err)
		}
	}

	var bridges []proto.DHTContact
	for _, b := range cfg.ParsedBridges() {
		bridges = append(bridges, proto.DHTContact{ID: b.ID, Addr: b.Addr})
	}
	n.guard = newDialGuard(cfg.Anonymous, bridgeIDs(bridges))
	lc := linkConfig(cfg)
	n.writeLimit = lc.WriteLimit
	n.links = link.NewLinks(n.id.Key, lc)
	swCfg := switchConfig(cfg)
	if cfg.Anonymous {
		swCfg.MaxJoinedCircuits = 0 // carries no one's circuits
	}
	swCfg.OnEvent = n.circuitEvent
	if cfg.Roles.Exit {
		policy, err := cfg.ExitPolicy()
		if err != nil {
			return nil, err
		}
		n.exitPolicy.Store(&policy)
		swCfg.ExitPolicy = func(ap netip.AddrPort) bool { return n.exitPolicy.Load().Allows(ap) }
	}
	if n.sw, err = circuits.NewSwitch(n.id, guardedDialer{n, n.links}, swCfg); err != nil {
		return nil, err
	}
	n.startMetrics()
	// Handlers before Listen: a link keeps the handlers it started with.
	// DHT cells arriving before the DHT exists are dropped (dhtReady).
	cellHandler := n.sw.HandleCell
	if n.obs != nil {
		cellHandler = func(c link.Conn, cell *proto.Cell) {
			n.observeLink(c)
			n.sw.HandleCell(c, cell)
		}
	}
	n.links.SetHandlers(link.Handlers{Cell: cellHandler, Closed: n.handleClosed, Var: n.handleVar})
	if !cfg.ClientOnly() && cfg.Listen != "" {
		la, err := n.links.Listen(cfg.Listen)
		if err != nil {
			return nil, err
		}
		if n.addr, err = advertised(cfg, la); err != nil {
			return nil, err
		}
	}
	if err := n.refreshDescriptor(); err != nil {
		return nil, err
	}

	dcfg := kademlia.DefaultNodeConfig()
	if cfg.AllowPrivate {
		// Test networks put every node on 127.0.0.1: one /24.
		dcfg.DHT.MaxPerSubnet = 0
		dcfg.DHT.MaxRecordsPerSubnet, dcfg.DHT.MaxKeyRecordsPerSubnet = 0, 0
	}
	if !cfg.ClientOnly() && !proto.IDWorkOK(n.id.ID, dcfg.DHT.IDWorkBits) {
		n.log.Warn("identity key predates the ID puzzle: other nodes keep this node out of their DHT tables; move the identity key file away to make a new one",
			"id", n.id.ID.Short(), "work", proto.IDWork(n.id.ID), "want", dcfg.DHT.IDWorkBits)
	}
	dcfg.Bridges = bridges
	kid := kademlia.Identity{ID: n.id.ID, Addr: n.addr, OnionKey: n.id.OnionPublic()}
	if !cfg.ClientOnly() {
		kid.Key = n.id.Key // signs the provider records our ORDB service stores
	}
	if n.dht, err = kademlia.NewNode(dcfg, kid, linksTransport{n}); err != nil {
		return nil, err
	}
	n.dhtReady.Store(n.dht)
	if cfg.Roles.Facilitator {
		if err := n.startFacilitator(); err != nil {
			return nil, err
		}
	}
	if n.served != nil {
		if err := n.startORDB(); err != nil {
			return nil, err
		}
	}
	if !cfg.ClientOnly() {
		n.sw.Handle(DirDest, n.serveDir)
	}

	pcfg := circuits.DefaultPoolConfig()
	pcfg.MinCircuits, pcfg.MaxCircuits = cfg.Tunnels.MinCircuits, cfg.Tunnels.MaxCircuits
	pcfg.MaxTime, _ = cfg.MaxTime()
	pcfg.MaxTimeInactive, _ = cfg.MaxTimeInactive()
	pcfg.MaxTraffic, _ = cfg.MaxTraffic()
	pcfg.ExitFlags = proto.FlagORDB
	pcfg.AllowSameSubnet = cfg.AllowPrivate
	if pcfg.Guards, err = loadGuards(n.dataDir); err != nil {
		return nil, err
	}
	n.guards = pcfg.Guards
	if n.pool, err = circuits.NewPool(n.sw, n.dir, pcfg); err != nil {
		return nil, err
	}

	ecfg := circuits.DefaultExitDialerConfig()
	ecfg.Hops = cfg.Tunnels.Hops
	ecfg.AllowSameSubnet = cfg.AllowPrivate
	ecfg.Guards = n.guards // exit circuits start at our guards too
	if n.exits, err = circuits.NewExitDialer(n.sw, n.dir, ecfg); err != nil {
		return nil, err
	}
	n.content = n.socksContent()

	if cfg.HTTP != "" {
		if n.api, err = startAPI(n, cfg.HTTP); err != nil {
			return nil, err
		}
	}
	if err := n.startControl(cfg, opts); err != nil {
		return nil, err
	}
	if cfg.SOCKS != "" {
		if err := n.startSOCKS(cfg.SOCKS); err != nil {
			return nil, fmt.Errorf("socks port: %w", err)
		}
	}
	return n, nil
}

// advertised is the address others reach us at.
func advertised(cfg config.Config, la net.Addr) (netip.AddrPort, error) {
	if cfg.Advertise != "" {
		return netip.ParseAddrPort(cfg.Advertise)
	}
	ap, err := netip.ParseAddrPort(la.String())
	if err != nil {
		return ap, err
	}
	if ap.Addr().IsUnspecified() {
		return netip.AddrPort{}, errors.New("config: listen is on every interface: set `advertise` to the IP:PORT others reach this node at")
	}
	return ap, nil
}

// refreshDescriptor signs a new descriptor of the node (rotating the
// onion key when due first).
func (n *Node) refreshDescriptor() error {
	if n.cfg.Load().ClientOnly() {
		return nil
	}
	if _, err := n.id.RotateOnionIfDue(n.now()); err != nil {
		n.log.Warn("rotating the onion key", "err", err)
	}
	var addrs []netip.AddrPort
	if n.addr.IsValid() {
		addrs = []netip.AddrPort{n.addr}
	}
	var ports []proto.PortRange
	if cfg := n.cfg.Load(); cfg.Roles.Exit {
		if p, err := cfg.ExitPolicy(); err == nil {
			ports = p.PortSummary(proto.MaxExitPortRanges)
		}
	}
	d, err := n.id.ExitDescriptorAt(n.now(), addrs, n.cfg.Load().Roles.Flags(), ports, descValidity)
	if err != nil {
		return err
	}
	n.desc.Store(&d)
	return nil
}

// ID is the node's ID.
func (n *Node) ID() proto.NodeID { return n.id.ID }

// Addr is where others reach the node (invalid for a client-only node).
func (n *Node) Addr() netip.AddrPort { return n.addr }

// BridgeLine is how others name this node in their `bridges`.
func (n *Node) BridgeLine() string {
	if !n.addr.IsValid() {
		return ""
	}
	return config.Bridge{ID: n.id.ID, Addr: n.addr}.String()
}

// APIAddr is where the local API listens ("" when off).
func (n *Node) APIAddr() string {
	if n.api == nil {
		return ""
	}
	return n.api.addr
}

// Run bootstraps through the bridges, keeps the directory and the pool
// filled and the descriptor fresh until ctx ends or Close. It returns nil
// then.
func (n *Node) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-n.ctx.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	n.wg.Add(2)
	go func() {
		defer n.wg.Done()
		_ = n.dht.Run(ctx)
	}()
	go func() {
		defer n.wg.Done()
		_ = n.pool.Run(ctx)
	}()
	anon := n.anonymous()
	if !anon { // an anonymous node builds only the circuits it uses
		if err := n.pool.BuildTunnels(n.cfg.Load().Tunnels.Hops); err != nil {
			return err
		}
	}
	n.log.Info("node up", "id", n.id.ID.Short(), "addr", n.addr, "flags", n.cfg.Load().Roles.Flags(), "anonymous", anon)
	if n.fac != nil {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.runFacilitator(ctx)
		}()
	}
	if n.relay != nil {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			_ = n.relay.Run(ctx)
		}()
	}
	if n.peer != nil {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.runPeer(ctx)
		}()
	}
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	n.lastBootstrap = n.now() // the DHT's Run bootstraps as it starts
	discover := time.NewTimer(0)
	defer discover.Stop()
	every := time.Second // the discovery period
	resign := time.NewTicker(descValidity / 2)
	defer resign.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-resign.C:
			if err := n.refreshDescriptor(); err != nil {
				n.log.Warn("re-signing the descriptor", "err", err)
			}
		case <-discover.C:
			if anon {
				n.discoverAnon(ctx)
			} else {
				n.discover(ctx, rng)
			}
			if !anon { // an anonymous node builds only the circuits it uses
				n.exits.Warm()
			}
			// The pool retries failed builds only every few seconds: wake
			// it as soon as the directory may offer paths.
			if !anon && len(n.pool.FindCircuits()) < n.cfg.Load().Tunnels.MinCircuits {
				_ = n.pool.BuildTunnels(n.cfg.Load().Tunnels.Hops)
			}
			// Look around every second while the directory is thin, then
			// less and less often, up to every 30 s: a node of a young
			// network still finds the nodes that joined after it within
			// seconds. (A 30 s step at once could leave a node, or an
			// anonymous node copying its bridge's directory, with part of
			// a young network for a minute.)
			if n.dir.Len() < 2*n.cfg.Load().Tunnels.Hops+2 {
				every = time.Second
			} else {
				every = min(2*every, 30*time.Second)
			}
			discover.Reset(every)
		}
	}
}

// discover runs a DHT lookup (of ourselves while the table is empty, of a
// random ID otherwise) and asks the nodes it found for their descriptors.
func (n *Node) discover(ctx context.Context, rng *rand.Rand) {
	st, err := n.dht.Stats(ctx)
	if err != nil {
		return
	}
	// Bootstrap again while alone, but not every second at an
	// unreachable bridge.
	if now := n.now(); st.TableSize == 0 && now.Sub(n.lastBootstrap) >= 5*time.Second {
		n.lastBootstrap = now
		if _, err := n.dht.Bootstrap(ctx, nil); err != nil {
			n.log.Debug("bootstrap", "err", err)
		}
	}
	var target proto.NodeID
	if rng.IntN(2) == 0 {
		target = n.id.ID
	} else {
		_, _ = crand.Read(target[:])
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r, err := n.dht.FindNode(lctx, target)
	if err != nil {
		n.log.Debug("discovery lookup", "err", err)
		return
	}
	for _, c := range r.Closest {
		n.askDescriptor(lctx, c)
	}
}

// startORDB makes the ORDB service (for a node with the ORDB role) and
// the Peer and registers them at the switch. The service relays only (no
// store of its own): what the user published leaves through the Peer's
// own circuits, so that this node is never the ORDB that serves it to
// strangers. An anonymous client has the Peer alone.
func (n *Node) startORDB() error {
	cfg := n.cfg.Load()
	var err error
	if cfg.Roles.ORDB {
		rcfg := ordb.DefaultRelayConfig()
		rcfg.Core.Self = n.id.ID
		rcfg.DHT = relayDHT{n}
		rcfg.Builder = relayBuilder{n}
		rcfg.Facilitator = cfg.Roles.Facilitator
		if rcfg.Facilitators, err = n.facilitatorFinder(); err != nil {
			return err
		}
		rcfg.Core.Facilitators = true
		if n.relay, err = ordb.NewRelay(rcfg); err != nil {
			return err
		}
		n.sw.Handle(ordb.ORDBDest, func(s *circuits.Stream) { n.relay.Serve(n.observeIn(ordb.FromCircuitStream(s))) })
	}
	n.peerCircs = newPeerCircuits(n)
	if n.peer, err = ordb.NewPeer(ordb.PeerConfig{Store: n.served, Circuits: n.peerCircs, Facilitator: cfg.Roles.Facilitator}); err != nil {
		return err
	}
	if n.obs == nil {
		n.sw.Handle(ordb.PeerDest, n.peer.Serve)
	} else {
		n.sw.Handle(ordb.PeerDest, func(s *circuits.Stream) { n.peer.ServeStream(n.observe(s), streamCircuit(s)) })
	}
	return nil
}

// Reload applies a new configuration: what can change while running (the
// log level, the bridges: bootstrapped through at once) changes; the rest
// is reported as needing a restart.
func (n *Node) Reload(cfg config.Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	old := n.cfg.Load()
	if n.level != nil {
		n.level.Set(LevelOf(cfg.LogLevel))
	}
	next := *old
	next.LogLevel, next.Bridges = cfg.LogLevel, cfg.Bridges
	if n.exitPolicy.Load() != nil && !slices.Equal(cfg.Exit.Policy, old.Exit.Policy) {
		// A new exit policy applies to the next BEGIN; the descriptor's
		// port summary follows at once. exit.allow_private stays as the
		// node started.
		pc := cfg
		pc.Exit.AllowPrivate = old.Exit.AllowPrivate
		p, err := pc.ExitPolicy()
		if err != nil {
			return err
		}
		n.exitPolicy.Store(&p)
		next.Exit.Policy = cfg.Exit.Policy
		defer func() {
			if err := n.refreshDescriptor(); err != nil {
				n.log.Warn("re-signing the descriptor after a new exit policy", "err", err)
			}
		}()
	}
	if rate, burst, err := cfg.BandwidthLimit(); err == nil && rate > 0 && n.writeLimit != nil {
		n.writeLimit.Set(int(rate), int(burst))
		next.RelayBandwidthRate, next.RelayBandwidthBurst = cfg.RelayBandwidthRate, cfg.RelayBandwidthBurst
	}
	n.cfg.Store(&next)
	var bridges []proto.DHTContact
	for _, b := range cfg.ParsedBridges() {
		bridges = append(bridges, proto.DHTContact{ID: b.ID, Addr: b.Addr})
	}
	n.guard.setBridges(bridgeIDs(bridges))
	if len(bridges) > 0 {
		go func() {
			ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
			defer cancel()
			if _, err := n.dht.Bootstrap(ctx, bridges); err != nil {
				n.log.Warn("bootstrap after reload", "err", err)
			}
		}()
	}
	cfg.LogLevel, cfg.Bridges, cfg.Exit.Policy = next.LogLevel, next.Bridges, next.Exit.Policy
	cfg.RelayBandwidthRate, cfg.RelayBandwidthBurst = next.RelayBandwidthRate, next.RelayBandwidthBurst
	cfg.DataDir = next.DataDir
	if fmt.Sprint(cfg) != fmt.Sprint(next) {
		n.log.Warn("reload: settings other than log_level, bridges and (on an exit) exit.policy take effect at the next start")
	}
	return nil
}

// LevelOf maps log_level to a slog level.
func LevelOf(s string) slog.Level {
	switch s {
	case "error":
		return slog.LevelError
	case "info":
		return slog.LevelInfo
	case "debug":
		return slog.LevelDebug
	}
	return slog.LevelWarn
}

// Close stops the node: the API, the pool (destroying our circuits), the
// DHT, the switch (destroying the circuits we carry), the links, then
// flushes and closes the stores. Idempotent.
func (n *Node) Close() error {
	n.closed.Do(func() {
		n.cancel() // ends Run, and the fetches and publications of the API
		if s := n.ctl.Load(); s != nil {
			s.Close()
		}
		if n.api != nil {
			n.api.close()
		}
		n.streams.closeWait()
		if n.socks != nil {
			n.socks.Close()
		}
		if n.exits != nil {
			n.exits.Close()
		}
		if n.pool != nil {
			n.pool.Close()
		}
		if n.relay != nil {
			n.relay.Close()
		}
		if n.dht != nil {
			n.dht.Close()
		}
		n.wg.Wait()
		if n.fac != nil {
			n.fac.close()
		}
		if n.peerCircs != nil {
			n.peerCircs.closeAll()
		}
		if n.sw != nil {
			n.sw.Close()
		}
		if n.links != nil {
			n.links.Close()
		}
		n.descWG.Wait()
		if n.guards != nil {
			n.guards.Close() // nothing writes guards.json once Close returned
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, s := range []*chunkstore.Store{n.served, n.cache} {
			if s != nil {
				if err := s.Flush(ctx); err != nil {
					n.log.Error("flushing a store", "err", err)
				}
				s.Close()
			}
		}
	})
	return nil
}

// WaitPaths waits until the directory holds enough nodes for a path of
// the configured length (a relay for each hop but the last, and an ORDB),
// or ctx ends.
func (n *Node) WaitPaths(ctx context.Context) error {
	want := n.cfg.Load().Tunnels.Hops
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if n.dir.Len() >= want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("knows %d nodes, needs %d for a path: %w", n.dir.Len(), want, ctx.Err())
		case <-t.C:
		}
	}
}
