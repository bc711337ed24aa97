package facilitator

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anacrolix/dht/v2"
	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	pp "github.com/anacrolix/torrent/peer_protocol"
	utHolepunch "github.com/anacrolix/torrent/peer_protocol/ut-holepunch"
	"github.com/anacrolix/torrent/storage"
)

// Fetcher is what an ORDB asks when no veil source has the content: fetch a
// torrent by infohash and hand out its verified pieces in order.
type Fetcher interface {
	// Open starts a transfer. It returns once the info dictionary is known
	// (fetched from peers with ut_metadata, or given in opts), or with an
	// error when it could not be had within the metadata timeout.
	Open(ctx context.Context, ih InfoHash, opts OpenOptions) (Transfer, error)
}

// Transfer is one torrent being fetched.
type Transfer interface {
	// Info is the torrent's info dictionary, already checked against the
	// infohash; Info().Bytes() is what the requester checks end to end
	// with VerifyInfo.
	Info() *Info
	// Pieces fetches pieces [first, end) and yields them in order, each
	// verified against its SHA-1. Piece.Data is valid only until the loop
	// body returns: the piece is then dropped from memory. Breaking out of
	// the loop or cancelling ctx stops the fetch. An error is yielded once
	// and ends the sequence.
	Pieces(ctx context.Context, first, end int) iter.Seq2[Piece, error]
	// Close stops the transfer and drops everything it holds.
	Close() error
}

// Piece is one verified piece handed out by a Transfer.
type Piece struct {
	Index int
	Data  []byte
}

// OpenOptions are per-transfer inputs.
type OpenOptions struct {
	// Peers to dial for this torrent, for example a magnet's x.pe list; the
	// Config's Peers are added too.
	Peers []netip.AddrPort
	// InfoBytes is the bencoded info dictionary if the caller has it (from
	// a .torrent file): it is checked against the infohash and no metadata
	// is fetched.
	InfoBytes []byte
}

// Errors of the client. Each is wrapped with what was being fetched.
var (
	ErrNoMetadata = errors.New("facilitator: no peer gave the torrent's metadata in time")
	ErrStalled    = errors.New("facilitator: no piece arrived in time")
	ErrBusy       = errors.New("facilitator: a transfer of this torrent is already open")
	ErrClosed     = errors.New("facilitator: closed")
)

// Protocol values the facilitator chose. The identification mimics
// Transmission 3.00, one of the most common clients, so that nothing on
// the wire names veil or its module path.
const (
	peerIDPrefix     = "-TR3000-"
	httpUserAgent    = "Transmission/3.00"
	peerIDAlphabet   = "0123456789abcdefghijklmnopqrstuvwxyz"
	maxPeerRequests  = 256 // see capReqq
	watchdogInterval = time.Second
)

// Config configures a Client. The zero value of each field means its
// default; see DefaultConfig.
type Config struct {
	// Capacity is the most piece data a transfer holds in memory at once:
	// pieces being downloaded plus verified ones the reader has not yet
	// released. It must hold at least one piece.
	Capacity int64
	// MetadataTimeout bounds fetching the info dictionary of a bare
	// infohash or magnet.
	MetadataTimeout time.Duration
	// ProgressTimeout ends a Pieces sequence with ErrStalled when the next
	// piece has not arrived for this long (no seeder, or none that answers).
	ProgressTimeout time.Duration
	// StallTimeout: a connected peer that sent no useful data for half
	// of it while we waited for data is dropped and dialled again; silent
	// for as long again on the new connection, its address and port are
	// banned for the Client's life.
	StallTimeout time.Duration
	// MaxConns is the most peer connections per torrent.
	MaxConns int
	// Peers are dialled for every torrent (a configured peer list).
	Peers []netip.AddrPort
	// Blocklist addresses are never dialled.
	Blocklist *Blocklist
	// AllowPrivatePeers allows dialling loopback, private and link-local
	// addresses; off, only global unicast addresses are dialled. Tests on
	// 127.0.0.1 set it.
	AllowPrivatePeers bool
	// DHT, if set, is asked for peers of each torrent with get_peers only
	// (see PassiveDHT); nil means no DHT.
	DHT PeerFinder
	// Logger receives the facilitator's own events, which never hold an
	// infohash next to a peer address. nil discards them.
	Logger *slog.Logger

	// dial replaces the TCP dial in tests.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// PeerFinder finds peers of a torrent without announcing anyone.
type PeerFinder interface {
	// FindPeers sends batches of peer addresses until ctx ends or the
	// search is over, then closes the channel.
	FindPeers(ctx context.Context, ih InfoHash) <-chan []netip.AddrPort
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Capacity:        32 << 20,
		MetadataTimeout: time.Minute,
		ProgressTimeout: 2 * time.Minute,
		StallTimeout:    30 * time.Second,
		MaxConns:        30,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Capacity == 0 {
		c.Capacity = d.Capacity
	}
	if c.MetadataTimeout == 0 {
		c.MetadataTimeout = d.MetadataTimeout
	}
	if c.ProgressTimeout == 0 {
		c.ProgressTimeout = d.ProgressTimeout
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = d.StallTimeout
	}
	if c.MaxConns == 0 {
		c.MaxConns = d.MaxConns
	}
	return c
}

// Validate reports the first bad setting, naming it.
func (c Config) Validate() error {
	switch {
	case c.Capacity < 16<<10:
		return fmt.Errorf("facilitator: Capacity %d is below one 16 KiB chunk", c.Capacity)
	case c.MetadataTimeout < 0:
		return fmt.Errorf("facilitator: MetadataTimeout %v is negative", c.MetadataTimeout)
	case c.ProgressTimeout < 0:
		return fmt.Errorf("facilitator: ProgressTimeout %v is negative", c.ProgressTimeout)
	case c.StallTimeout < 0:
		return fmt.Errorf("facilitator: StallTimeout %v is negative", c.StallTimeout)
	case c.MaxConns < 0:
		return fmt.Errorf("facilitator: MaxConns %d is negative", c.MaxConns)
	}
	for _, p := range c.Peers {
		if !p.IsValid() || p.Port() == 0 {
			return fmt.Errorf("facilitator: Peers holds a bad address %v", p)
		}
	}
	return nil
}

// Client is the facilitator's BitTorrent side: a pure freerider. It dials
// out only (no listening socket, no uTP, no incoming connections), never
// uploads content (NoUpload and per-torrent DisallowDataUpload), never seeds,
// never announces (no trackers, no DHT node of its own, no PEX, no UPnP or
// NAT-PMP, no web seeds, no webtorrent, no HTTP at all) and does not take
// part in ut_holepunch. It keeps no piece once the reader released it.
//
// Known leak: the underlying client still sends HAVE messages (or a
// bitfield on a new connection) for verified pieces it holds, so the peers
// of a transfer learn which pieces this facilitator completed: little more
// than they already learn from its requests. Peers asking for those pieces
// are refused (choked).
//
// Client is safe for concurrent use.
type Client struct {
	cfg    Config
	tc     *torrent.Client
	dialer *peerDialer
	log    *slog.Logger

	mu   sync.Mutex // guards open
	open map[InfoHash]*transfer
}

var _ Fetcher = (*Client)(nil)

// New starts a Client.
func New(cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	peerID, err := newPeerID()
	if err != nil {
		return nil, err
	}
	d := &peerDialer{
		blocklist:    cfg.Blocklist,
		allowPrivate: cfg.AllowPrivatePeers,
		dial:         cfg.dial,
		banned:       make(map[netip.AddrPort]bool),
	}
	if d.dial == nil {
		var nd net.Dialer
		d.dial = nd.DialContext
	}
	tc, err := torrent.NewClient(freeriderConfig(cfg, peerID))
	if err != nil {
		return nil, fmt.Errorf("facilitator: starting the torrent client: %w", err)
	}
	tc.AddDialer(torrent.NetworkDialer{Network: "tcp", Dialer: d})
	return &Client{cfg: cfg, tc: tc, dialer: d, log: logger, open: make(map[InfoHash]*transfer)}, nil
}

// freeriderConfig is the whole of the anonymity-relevant configuration of
// the underlying client, in one place.
func freeriderConfig(cfg Config, peerID string) *torrent.ClientConfig {
	tc := torrent.NewDefaultClientConfig()
	// No storage unless a transfer brings its own keep-nothing store.
	tc.DefaultStorage = refuseStorage{}

	// Sockets: none. With TCP and uTP disabled the client opens no
	// listener and no UDP socket; peers are reached through the dialer
	// added in New.
	tc.DisableTCP = true
	tc.DisableUTP = true
	tc.AcceptPeerConnections = false
	tc.ListenPort = 0
	tc.NoDefaultPortForwarding = true // no UPnP / NAT-PMP
	tc.UpnpID = ""

	// Announces: none. No DHT node (it would answer queries and announce
	// each torrent), no trackers, no PEX, no web seeds or webtorrent.
	tc.NoDHT = true
	tc.PeriodicallyAnnounceTorrentsToDht = false
	tc.DhtStartingNodes = func(string) dht.StartingNodesGetter {
		return func() ([]dht.Addr, error) { return nil, nil }
	}
	tc.DisableTrackers = true
	tc.DisablePEX = true
	tc.DisableWebtorrent = true
	tc.DisableWebseeds = true
	// Belt and braces: whatever HTTP or tracker traffic a code path might
	// still attempt fails before leaving the process.
	tc.WebTransport = refuseRoundTripper{}
	tc.TrackerDialContext = func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("facilitator: trackers are disabled")
	}
	tc.TrackerListenPacket = func(string, string) (net.PacketConn, error) {
		return nil, errors.New("facilitator: trackers are disabled")
	}

	// Uploads: none.
	tc.NoUpload = true
	tc.Seed = false

	// Identification: nothing names veil or its module path.
	tc.ExtendedHandshakeClientVersion = "" // the "v" key is then left out
	tc.Bep20 = peerIDPrefix
	tc.PeerID = peerID
	tc.HTTPUserAgent = httpUserAgent
	// Do not claim DHT support (no PORT message, nobody asks us as a node).
	tc.Extensions = pp.NewPeerExtensionBytes(pp.ExtensionBitLtep, pp.ExtensionBitFast)

	tc.EstablishedConnsPerTorrent = cfg.MaxConns
	if cfg.Blocklist != nil {
		tc.IPBlocklist = ranger{cfg.Blocklist}
	}
	// anacrolix logs peer addresses next to infohashes; discard them all.
	tc.Slogger = slog.New(slog.DiscardHandler)

	tc.Callbacks.PeerConnAdded = append(tc.Callbacks.PeerConnAdded, func(pc *torrent.PeerConn) {
		// Advertise ut_metadata only: no ut_holepunch (we would relay
		// rendezvous for others and be told whom to dial) and no ut_pex.
		pc.LocalLtepProtocolMap = &metadataOnly
	})
	tc.Callbacks.ReadExtendedHandshake = func(_ *torrent.PeerConn, m *pp.ExtendedHandshakeMessage) {
		// Forget that the peer offers ut_holepunch or ut_pex: the client
		// then never sends it a holepunch rendezvous after a failed dial
		// (which would tell it whom we try to reach), nor PEX.
		delete(m.M, utHolepunch.ExtensionName)
		delete(m.M, pp.ExtensionNamePex)
		capReqq(m)
	}
	return tc
}

// metadataOnly is the extension map every connection advertises.
var metadataOnly = torrent.LocalLtepProtocolMap{Index: []pp.ExtensionName{pp.ExtensionNameMetadata}, NumBuiltin: 1}

// capReqq lowers the request queue depth a peer advertises. Transmission
// advertises 512 and then stalls a client that keeps 512 requests in flight;
// 256 keeps every seeder tested busy without tripping it.
func capReqq(m *pp.ExtendedHandshakeMessage) {
	if m.Reqq > maxPeerRequests {
		m.Reqq = maxPeerRequests
	}
}

// newPeerID makes a fresh peer ID per Client in Transmission's form, so
// that sessions cannot be linked by it.
func newPeerID() (string, error) {
	var r [20 - len(peerIDPrefix)]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", fmt.Errorf("facilitator: peer id: %w", err)
	}
	id := []byte(peerIDPrefix)
	for _, b := range r {
		id = append(id, peerIDAlphabet[int(b)%len(peerIDAlphabet)])
	}
	return string(id), nil
}

// Open starts fetching ih; see Fetcher.
func (c *Client) Open(ctx context.Context, ih InfoHash, opts OpenOptions) (Transfer, error) {
	c.mu.Lock()
	if c.open == nil {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if c.open[ih] != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %v", ErrBusy, ih)
	}
	tr := &transfer{c: c, ih: ih, store: newPieceStore(c.cfg.Capacity), lastUseful: make(map[*torrent.PeerConn]peerProgress), kicked: make(map[netip.AddrPort]bool)}
	c.open[ih] = tr
	c.mu.Unlock()

	var t *torrent.Torrent
	for {
		var isNew bool
		t, isNew = c.tc.AddTorrentOpt(torrent.AddTorrentOpts{
			InfoHash:           metainfo.Hash(ih),
			Storage:            tr.store,
			DisallowDataUpload: true,
		})
		if isNew {
			break
		}
		// A transfer of the same torrent closed just before this Open is
		// still being dropped: wait for it, or this transfer would get
		// the dying torrent (and no piece ever).
		select {
		case <-t.Closed():
		case <-ctx.Done():
			c.mu.Lock()
			if c.open != nil && c.open[ih] == tr {
				delete(c.open, ih)
			}
			c.mu.Unlock()
			return nil, fmt.Errorf("facilitator: waiting for a closing transfer of %v: %w", ih, ctx.Err())
		}
	}
	tr.t = t
	t.SetOnWriteChunkError(func(error) {
		// The store refuses writes beyond Capacity; the client re-requests
		// the chunk. Installing a handler keeps the default one (which
		// disables downloading for good) out of the way.
		tr.writeRefusals.Add(1)
	})
	for _, p := range append(append([]netip.AddrPort(nil), c.cfg.Peers...), opts.Peers...) {
		tr.addPeer(p)
	}
	var findCancel context.CancelFunc = func() {}
	if c.cfg.DHT != nil {
		var fctx context.Context
		fctx, findCancel = context.WithCancel(context.Background())
		go tr.findPeers(fctx, c.cfg.DHT.FindPeers(fctx, ih))
	}
	tr.stopFind = findCancel

	if opts.InfoBytes != nil {
		if _, err := VerifyInfo(ih, opts.InfoBytes); err != nil {
			tr.Close()
			return nil, fmt.Errorf("facilitator: given info of %v: %w", ih, err)
		}
		if err := t.SetInfoBytes(opts.InfoBytes); err != nil {
			tr.Close()
			return nil, fmt.Errorf("facilitator: given info of %v: %w", ih, err)
		}
	}
	timer := time.NewTimer(c.cfg.MetadataTimeout)
	defer timer.Stop()
	select {
	case <-t.GotInfo():
	case <-timer.C:
		n := len(t.PeerConns())
		tr.Close()
		return nil, fmt.Errorf("%w: %v after %v (%d peers connected)", ErrNoMetadata, ih, c.cfg.MetadataTimeout, n)
	case <-ctx.Done():
		tr.Close()
		return nil, fmt.Errorf("facilitator: fetching metadata of %v: %w", ih, ctx.Err())
	}
	mi := t.Metainfo()
	info, err := VerifyInfo(ih, mi.InfoBytes)
	if err != nil {
		// anacrolix checked the hash already; this catches what it accepts
		// and the requester would not (v2-only, bad layout).
		tr.Close()
		return nil, fmt.Errorf("facilitator: metadata of %v: %w", ih, err)
	}
	tr.info = info
	return tr, nil
}

// Stats are the client's counters, summed over all transfers.
type Stats struct {
	// BytesWrittenData is content uploaded: always 0 for a freerider.
	BytesWrittenData int64
	// BytesReadUsefulData is content downloaded and wanted.
	BytesReadUsefulData int64
	// DialsRefused counts dials refused by the blocklist, a ban or the
	// private-address policy.
	DialsRefused int64
	// Banned counts peers dropped for stalling.
	Banned int64
}

// Stats returns the counters.
func (c *Client) Stats() Stats {
	s := c.tc.Stats()
	return Stats{
		BytesWrittenData:    s.BytesWrittenData.Int64(),
		BytesReadUsefulData: s.BytesReadUsefulData.Int64(),
		DialsRefused:        c.dialer.refused.Load(),
		Banned:              c.dialer.bans.Load(),
	}
}

// ListenAddrs returns the addresses the client listens on: none.
func (c *Client) ListenAddrs() []net.Addr { return c.tc.ListenAddrs() }

// Close drops every transfer and stops the client. It is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	trs := c.open
	c.open = nil
	c.mu.Unlock()
	if trs == nil {
		return nil
	}
	for _, tr := range trs {
		tr.close()
	}
	if errs := c.tc.Close(); len(errs) > 0 {
		return fmt.Errorf("facilitator: closing the torrent client: %w", errors.Join(errs...))
	}
	return nil
}

// transfer is the Client's Transfer.
type transfer struct {
	c        *Client
	ih       InfoHash
	t        *torrent.Torrent
	store    *pieceStore
	info     *Info
	stopFind context.CancelFunc

	writeRefusals atomic.Int64

	mu         sync.Mutex // guards the fields below
	streaming  bool
	closed     bool
	peers      []netip.AddrPort // every address learnt, re-added when idle
	lastUseful map[*torrent.PeerConn]peerProgress
	kicked     map[netip.AddrPort]bool // dropped once for stalling
}

type peerProgress struct {
	useful int64
	since  time.Time
}

var _ Transfer = (*transfer)(nil)

func (tr *transfer) Info() *Info { return tr.info }

// addPeer records and offers one address to the torrent client, unless the
// dial policy would refuse it anyway.
func (tr *transfer) addPeer(p netip.AddrPort) {
	p = netip.AddrPortFrom(p.Addr().Unmap(), p.Port())
	if tr.c.dialer.refuse(p) != nil {
		return
	}
	tr.mu.Lock()
	known := false
	for _, q := range tr.peers {
		known = known || q == p
	}
	if !known {
		tr.peers = append(tr.peers, p)
	}
	tr.mu.Unlock()
	tr.t.AddPeers([]torrent.PeerInfo{{Addr: net.TCPAddrFromAddrPort(p), Source: torrent.PeerSourceDirect}})
}

func (tr *transfer) knownPeers() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.peers)
}

func (tr *transfer) findPeers(ctx context.Context, ch <-chan []netip.AddrPort) {
	for {
		select {
		case <-ctx.Done():
			return
		case batch, ok := <-ch:
			if !ok {
				return
			}
			for _, p := range batch {
				tr.addPeer(p)
			}
		}
	}
}

func (tr *transfer) Pieces(ctx context.Context, first, end int) iter.Seq2[Piece, error] {
	return func(yield func(Piece, error) bool) {
		if err := tr.startStream(first, end); err != nil {
			yield(Piece{}, err)
			return
		}
		defer tr.endStream(first, end)
		tr.stream(ctx, first, end, yield)
	}
}

func (tr *transfer) startStream(first, end int) error {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	switch {
	case tr.closed:
		return ErrClosed
	case tr.streaming:
		return errors.New("facilitator: a Pieces sequence of this transfer is already running")
	case first < 0 || end > tr.info.NumPieces() || first > end:
		return fmt.Errorf("facilitator: pieces [%d, %d) outside [0, %d)", first, end, tr.info.NumPieces())
	}
	tr.streaming = true
	// Stall time counts only while data is awaited: a peer idle between
	// two sequences (nothing asked of it) has not stalled.
	clear(tr.lastUseful)
	return nil
}

// endStream gives up the window: no piece stays wanted or held.
func (tr *transfer) endStream(first, end int) {
	tr.mu.Lock()
	tr.streaming = false
	closed := tr.closed
	tr.mu.Unlock()
	if closed {
		return
	}
	// No CancelPieces: requests cancelled in flight could leave the
	// torrent client waiting on the peer. Pieces that still arrive are
	// verified and held (within Capacity) until asked for again or the
	// transfer closes.
	for i := first; i < end; i++ {
		tr.t.Piece(i).SetPriority(torrent.PiecePriorityNone)
		// Verified pieces go; a piece still being written stays: the
		// torrent client counts its chunks as written and would request
		// only the others, so dropping them would fail the piece's hash
		// and ban its sender.
		tr.store.releaseDone(i)
	}
	tr.refreshCompletion(first, end)
}

// refreshCompletion makes the torrent client forget pieces the store
// dropped, so that a later request fetches them again.
func (tr *transfer) refreshCompletion(first, end int) {
	for i := first; i < end; i++ {
		if tr.t.Piece(i).State().Complete && !tr.store.complete(i) {
			tr.t.Piece(i).UpdateCompletion()
		}
	}
}

// stream is the in-order delivery loop: it keeps the pieces of a window
// that fits in Capacity wanted, the next one most urgent, waits for the
// next one to be verified, yields it, then drops it and slides on.
func (tr *transfer) stream(ctx context.Context, first, end int, yield func(Piece, error) bool) {
	window := max(1, int(tr.c.cfg.Capacity/tr.info.PieceLength()))
	wanted := first // pieces [first, wanted) have had their priority set
	tick := time.NewTicker(watchdogInterval)
	defer tick.Stop()
	for next := first; next < end; next++ {
		for ; wanted < end && wanted < next+window; wanted++ {
			if !tr.store.complete(wanted) {
				tr.t.Piece(wanted).UpdateCompletion()
			}
			tr.t.Piece(wanted).SetPriority(torrent.PiecePriorityHigh)
		}
		tr.t.Piece(next).SetPriority(torrent.PiecePriorityNow)
		progress := time.Now()
		for {
			if data, ok := tr.store.take(next); ok {
				if !yield(Piece{Index: next, Data: data}, nil) {
					return
				}
				break
			}
			select {
			case <-ctx.Done():
				yield(Piece{}, fmt.Errorf("facilitator: fetching piece %d of %v: %w", next, tr.ih, ctx.Err()))
				return
			case <-tr.t.Closed():
				yield(Piece{}, ErrClosed)
				return
			case <-tr.store.ready:
			case now := <-tick.C:
				if now.Sub(progress) > tr.c.cfg.ProgressTimeout {
					st := tr.c.Stats()
					yield(Piece{}, fmt.Errorf("%w: piece %d of %v after %v (%d peers connected, %d known, %d banned, %d dials refused)",
						ErrStalled, next, tr.ih, tr.c.cfg.ProgressTimeout, len(tr.t.PeerConns()), tr.knownPeers(), st.Banned, st.DialsRefused))
					return
				}
				tr.watchdog(now)
			}
		}
		// The reader is done with it: drop it now.
		tr.t.Piece(next).SetPriority(torrent.PiecePriorityNone)
		tr.store.release(next)
		tr.t.Piece(next).UpdateCompletion()
	}
}

// watchdog drops and bans peers that sent nothing useful for StallTimeout
// while we waited, and re-offers known peers when few are connected (a
// failed dial removes a peer from the client's list).
func (tr *transfer) watchdog(now time.Time) {
	conns := tr.t.PeerConns()
	tr.mu.Lock()
	seen := make(map[*torrent.PeerConn]bool, len(conns))
	var stalled []*torrent.PeerConn
	for _, pc := range conns {
		seen[pc] = true
		st := pc.Stats()
		useful := st.BytesReadUsefulData.Int64()
		last, ok := tr.lastUseful[pc]
		switch {
		case !ok || useful > last.useful:
			if ok {
				if ap, err := netip.ParseAddrPort(pc.RemoteAddr.String()); err == nil {
					delete(tr.kicked, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
				}
			}
			tr.lastUseful[pc] = peerProgress{useful: useful, since: now}
		case now.Sub(last.since) > tr.c.cfg.StallTimeout/2:
			stalled = append(stalled, pc)
			delete(tr.lastUseful, pc)
		}
	}
	for pc := range tr.lastUseful {
		if !seen[pc] {
			delete(tr.lastUseful, pc)
		}
	}
	peers := append([]netip.AddrPort(nil), tr.peers...)
	tr.mu.Unlock()
	for _, pc := range stalled {
		// A peer silent for half of StallTimeout is dropped and dialled
		// again: a seeder may leave a connection choked for good after a
		// pause in our requests, and a new connection starts afresh.
		// Silent again on the next connection, it is banned.
		if ap, err := netip.ParseAddrPort(pc.RemoteAddr.String()); err == nil {
			ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
			tr.mu.Lock()
			again := tr.kicked[ap]
			tr.kicked[ap] = true
			tr.mu.Unlock()
			if again {
				tr.c.dialer.ban(ap)
			}
		}
		pc.Close()
		tr.c.log.Info("facilitator: dropped a stalled peer")
	}
	if len(conns)-len(stalled) < len(peers) {
		var infos []torrent.PeerInfo
		for _, p := range peers {
			if tr.c.dialer.refuse(p) == nil {
				infos = append(infos, torrent.PeerInfo{Addr: net.TCPAddrFromAddrPort(p), Source: torrent.PeerSourceDirect})
			}
		}
		tr.t.AddPeers(infos)
	}
}

// storeStats reports the store's held bytes, the most it ever held and the
// writes it refused at capacity.
func (tr *transfer) storeStats() (held, maxHeld, refused int64) { return tr.store.stats() }

func (tr *transfer) Close() error {
	tr.c.mu.Lock()
	if tr.c.open != nil && tr.c.open[tr.ih] == tr {
		delete(tr.c.open, tr.ih)
	}
	tr.c.mu.Unlock()
	tr.close()
	return nil
}

func (tr *transfer) close() {
	tr.mu.Lock()
	if tr.closed {
		tr.mu.Unlock()
		return
	}
	tr.closed = true
	tr.mu.Unlock()
	tr.stopFind()
	tr.t.Drop()
	tr.store.releaseAll()
}

// peerDialer is the only way the client reaches peers: TCP out, after the
// blocklist, the transfer bans and the private-address policy.
type peerDialer struct {
	blocklist    *Blocklist
	allowPrivate bool
	dial         func(ctx context.Context, network, addr string) (net.Conn, error)
	refused      atomic.Int64
	bans         atomic.Int64

	mu     sync.Mutex // guards banned
	banned map[netip.AddrPort]bool
}

func (d *peerDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		d.refused.Add(1)
		return nil, fmt.Errorf("facilitator: dial %q: not a literal IP:port", addr)
	}
	if err := d.refuse(ap); err != nil {
		d.refused.Add(1)
		return nil, err
	}
	return d.dial(ctx, "tcp", ap.String())
}

// refuse says why p is not to be dialled, or nil.
func (d *peerDialer) refuse(p netip.AddrPort) error {
	p = netip.AddrPortFrom(p.Addr().Unmap(), p.Port())
	a := p.Addr()
	switch {
	case d.blocklist.Blocked(a):
		return errors.New("facilitator: address is blocklisted")
	case !d.allowPrivate && (!a.IsGlobalUnicast() || a.IsPrivate()):
		return errors.New("facilitator: address is not global unicast")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.banned[p] {
		return errors.New("facilitator: peer is banned")
	}
	return nil
}

// ban refuses p from now on. Bans are per address and port: several peers
// may share an address (behind one NAT, or on 127.0.0.1 in tests).
func (d *peerDialer) ban(p netip.AddrPort) {
	p = netip.AddrPortFrom(p.Addr().Unmap(), p.Port())
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.banned[p] {
		d.banned[p] = true
		d.bans.Add(1)
	}
}

// refuseStorage is the client's default storage: a torrent without its own
// keep-nothing store gets none.
type refuseStorage struct{}

func (refuseStorage) OpenTorrent(context.Context, *metainfo.Info, metainfo.Hash) (storage.TorrentImpl, error) {
	return storage.TorrentImpl{}, errors.New("facilitator: no storage outside a transfer")
}

// refuseRoundTripper fails every HTTP request the torrent client might make.
type refuseRoundTripper struct{}

func (refuseRoundTripper) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("facilitator: HTTP is disabled")
}
