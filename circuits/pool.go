package circuits

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"time"

	"veil/proto"
)

// Directory is where path selection finds nodes: a static list now, the
// DHT's routing table later.
type Directory interface {
	// Nodes returns the descriptors known now. The caller does not modify them.
	Nodes() []proto.NodeDescriptor
}

// StaticDirectory is a fixed list of nodes.
type StaticDirectory []proto.NodeDescriptor

// Nodes returns the list.
func (d StaticDirectory) Nodes() []proto.NodeDescriptor { return d }

// PoolConfig holds the settings of the TunnelCommunity tunnel API that
// concern our own circuits (max_joined_circuits and peer_flags are SwitchConfig's
// MaxJoinedCircuits and Flags). Start from DefaultPoolConfig.
type PoolConfig struct {
	// MinCircuits is the count TunnelsReady measures against.
	MinCircuits int
	// MaxCircuits is how many circuits the pool keeps built (it builds up
	// to this many and replaces those that close).
	MaxCircuits int
	// MaxTime: a circuit older than this is closed and replaced.
	MaxTime time.Duration
	// MaxTimeInactive: a circuit idle this long is closed and replaced.
	MaxTimeInactive time.Duration
	// MaxTraffic: a circuit that carried this many payload bytes (both
	// ways) is closed and replaced.
	MaxTraffic uint64
	// BuildTimeout bounds one circuit build. Once the pool has seen
	// buildSamplesMin builds succeed, it adapts (as Tor's circuit build
	// timeout does): twice the 80th percentile of recent build times, but
	// never under MinBuildTimeout nor over BuildTimeout.
	BuildTimeout    time.Duration
	MinBuildTimeout time.Duration
	// CheckInterval is how often Run enforces the limits.
	CheckInterval time.Duration
	// ExitFlags are the flags the last hop must have (e.g. proto.FlagORDB).
	ExitFlags uint8
	// AllowSameSubnet lets two hops share a /16 (IPv4) or /32 (IPv6):
	// only for loopback tests.
	AllowSameSubnet bool
	// Rand draws the paths; the pool owns it once NewPool returns (nil: a
	// generator seeded from crypto/rand). Seed it for reproducible paths.
	Rand *rand.Rand
	// Guards, if set, are the client's guards: every circuit of two hops
	// or more starts at one of them.
	Guards *Guards
	// OnData receives what comes back on TunnelData's streams. It is
	// called from one goroutine per stream; data is valid during the call.
	OnData func(c *Circuit, dest string, data []byte)
}

// DefaultPoolConfig returns the settings veil runs with (Tribler's defaults
// where it has them).
func DefaultPoolConfig() PoolConfig {
	return PoolConfig{
		MinCircuits:     4,
		MaxCircuits:     8,
		MaxTime:         10 * time.Minute,
		MaxTimeInactive: 2 * time.Minute,
		MaxTraffic:      250 << 20,
		BuildTimeout:    10 * time.Second,
		MinBuildTimeout: 2 * time.Second,
		CheckInterval:   5 * time.Second,
		ExitFlags:       proto.FlagRelay,
	}
}

// Validate reports the first setting that cannot work, naming it.
func (c PoolConfig) Validate() error {
	switch {
	case c.MinCircuits < 1:
		return fmt.Errorf("circuits: pool config: MinCircuits %d must be at least 1", c.MinCircuits)
	case c.MaxCircuits < c.MinCircuits:
		return fmt.Errorf("circuits: pool config: MaxCircuits %d must be at least MinCircuits %d", c.MaxCircuits, c.MinCircuits)
	case c.MaxTime <= 0:
		return fmt.Errorf("circuits: pool config: MaxTime %v must be positive", c.MaxTime)
	case c.MaxTimeInactive <= 0:
		return fmt.Errorf("circuits: pool config: MaxTimeInactive %v must be positive", c.MaxTimeInactive)
	case c.MaxTraffic == 0:
		return errors.New("circuits: pool config: MaxTraffic must be positive")
	case c.BuildTimeout <= 0:
		return fmt.Errorf("circuits: pool config: BuildTimeout %v must be positive", c.BuildTimeout)
	case c.MinBuildTimeout <= 0 || c.MinBuildTimeout > c.BuildTimeout:
		return fmt.Errorf("circuits: pool config: MinBuildTimeout %v must be positive and at most BuildTimeout %v", c.MinBuildTimeout, c.BuildTimeout)
	case c.CheckInterval <= 0:
		return fmt.Errorf("circuits: pool config: CheckInterval %v must be positive", c.CheckInterval)
	}
	return nil
}

// Pool errors.
var (
	ErrNoPath     = errors.New("circuits: not enough suitable nodes for a path")
	ErrPoolClosed = errors.New("circuits: pool closed")
	ErrNotInPool  = errors.New("circuits: circuit not in the pool")
)

// SelectPath draws a path of hops nodes from nodes: the last hop has
// exitFlags, the others FlagRelay; all distinct, never self, each with a
// descriptor valid at now and an address, and (unless sameSubnet) no two in
// one /16 (IPv4) or /32 (IPv6). Pure: the randomness is rng. PathRules
// adds guards and weights.
func SelectPath(nodes []proto.NodeDescriptor, hops int, self proto.NodeID, exitFlags uint8, sameSubnet bool, now time.Time, rng *rand.Rand) ([]proto.NodeDescriptor, error) {
	return PathRules{Hops: hops, Self: self, ExitFlags: exitFlags, SameSubnet: sameSubnet, Now: now}.Select(nodes, rng)
}

// SelectPathTo is SelectPath with a chosen last hop (say, a given ORDB): it
// draws the hops-1 relays before it under the same rules.
func SelectPathTo(nodes []proto.NodeDescriptor, hops int, self proto.NodeID, last proto.NodeDescriptor, sameSubnet bool, now time.Time, rng *rand.Rand) ([]proto.NodeDescriptor, error) {
	return PathRules{Hops: hops, Self: self, Last: &last, SameSubnet: sameSubnet, Now: now}.Select(nodes, rng)
}

// PathRules are how a path is drawn; Select applies them.
//
// The /16 rule compares the addresses the path names, which are the
// addresses the hops are reached at: the origin dials the first hop's and
// names each later hop's in EXTEND2, and a relay reaches the node an
// EXTEND2 names at that IP only (link.Links.Get reuses no link the node
// opened from elsewhere), so a descriptor listing an address its node is
// not reachable at yields a failed extend, not a hop in a foreign /16.
type PathRules struct {
	Hops      int
	Self      proto.NodeID
	ExitFlags uint8                 // what the last hop must offer (when Last is nil)
	Last      *proto.NodeDescriptor // a chosen last hop, or nil
	// SameSubnet lets two hops share a /16 (IPv4) or /32 (IPv6): only for
	// loopback tests.
	SameSubnet bool
	// Guards, if set, are the only nodes a path of two or more hops may
	// start at.
	Guards *Guards
	// Weight, if set, weighs each candidate (by bandwidth and age: see
	// Pool); nil draws uniformly.
	Weight func(proto.NodeDescriptor) float64
	Now    time.Time
}

// Select draws a path from nodes under the rules. Pure but for the guards
// it may update and save; the randomness is rng.
func (r PathRules) Select(nodes []proto.NodeDescriptor, rng *rand.Rand) ([]proto.NodeDescriptor, error) {
	hops, now := r.Hops, r.Now
	if hops < 1 {
		return nil, fmt.Errorf("circuits: path of %d hops", hops)
	}
	last := r.Last
	if last != nil {
		if last.ID == r.Self {
			return nil, fmt.Errorf("%w: the last hop is ourselves", ErrNoPath)
		}
		if err := verifyDescriptor(*last, now); err != nil {
			return nil, fmt.Errorf("circuits: last hop %s: %w", last.ID.Short(), err)
		}
		if _, ok := firstAddr(*last); !ok {
			return nil, fmt.Errorf("%w: last hop %s has no address", ErrNoPath, last.ID.Short())
		}
	}
	var usable []proto.NodeDescriptor
	for _, d := range nodes {
		if d.ID == r.Self || verifyDescriptor(d, now) != nil {
			continue
		}
		if _, ok := firstAddr(d); !ok {
			continue
		}
		usable = append(usable, d)
	}
	path := make([]proto.NodeDescriptor, hops)
	usedID := map[proto.NodeID]bool{}
	usedNet := map[netip.Prefix]bool{}
	pick := func(i int, want uint8, from []proto.NodeDescriptor) bool {
		var cands []proto.NodeDescriptor
		for _, d := range from {
			if d.Flags&want != want || usedID[d.ID] {
				continue
			}
			if !r.SameSubnet && usedNet[subnet(d)] {
				continue
			}
			cands = append(cands, d)
		}
		d, ok := pickWeighted(cands, r.Weight, rng)
		if !ok {
			return false
		}
		path[i] = d
		usedID[d.ID] = true
		usedNet[subnet(d)] = true
		return true
	}
	if last != nil {
		path[hops-1] = *last
		usedID[last.ID] = true
		usedNet[subnet(*last)] = true
	} else if !pick(hops-1, r.ExitFlags, usable) {
		return nil, fmt.Errorf("%w: no last hop with flags %#x", ErrNoPath, r.ExitFlags)
	}
	first := 0
	if r.Guards != nil && hops > 1 {
		lastID := path[hops-1].ID
		guards, err := r.Guards.firstHops(usable, func(id proto.NodeID) bool { return id == lastID }, r.SameSubnet, r.Weight, now, rng)
		if len(guards) == 0 {
			return nil, err
		}
		// (An error saving the guards does not stop the path: they are
		// kept in memory and saved at the next change.)
		if !pick(0, proto.FlagRelay, guards) {
			return nil, fmt.Errorf("%w: no guard fits the path (its /16 is the last hop's)", ErrNoPath)
		}
		first = 1
	}
	for i := first; i < hops-1; i++ {
		if !pick(i, proto.FlagRelay, usable) {
			return nil, fmt.Errorf("%w: %d of %d hops", ErrNoPath, i+1, hops)
		}
	}
	return path, nil
}

func firstAddr(d proto.NodeDescriptor) (netip.AddrPort, bool) {
	for _, a := range d.Addrs {
		if a.IsValid() {
			return a, true
		}
	}
	return netip.AddrPort{}, false
}

// subnet is the /16 (IPv4) or /32 (IPv6) of the address a path names for
// d: the one Build dials and EXTEND2 names (pickAddr takes the same).
func subnet(d proto.NodeDescriptor) netip.Prefix {
	a, _ := firstAddr(d)
	ip := a.Addr().Unmap()
	bits := 16
	if ip.Is6() {
		bits = 32
	}
	p, _ := ip.Prefix(bits)
	return p
}

// activity is what Check last saw of a circuit: its cell count and when
// that count last changed (so inactivity is measured to CheckInterval).
type activity struct {
	cells   uint64
	changed time.Time
}

// Adaptive build timeout: how many recent build times count, and how many
// the pool needs before it trusts them.
const (
	buildSamplesMax = 100
	buildSamplesMin = 20
)

// adaptiveTimeout is twice the 80th percentile of samples, clamped to
// [floor, ceiling]; ceiling until there are buildSamplesMin samples.
func adaptiveTimeout(samples []time.Duration, floor, ceiling time.Duration) time.Duration {
	if len(samples) < buildSamplesMin {
		return ceiling
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	return min(max(2*s[len(s)*8/10], floor), ceiling)
}

type tunnelKey struct {
	circ uint64
	dest string
}

// Pool keeps a set of origin circuits built and fresh: the TunnelCommunity
// tunnel API in Go form. Call BuildTunnels, then Run (or Check
// periodically). Safe for concurrent use.
type Pool struct {
	sw  *Switch
	dir Directory
	cfg PoolConfig

	mu       sync.Mutex // guards the fields below
	hops     int        // 0 until BuildTunnels
	circs    []*Circuit
	activity map[*Circuit]activity
	samples  []time.Duration // recent successful build times, oldest first
	building int
	lastErr  error
	streams  map[tunnelKey]*Stream
	rng      *rand.Rand
	closed   bool
	bw       map[proto.NodeID]float64 // bytes a second measured through each node (weights)

	wake chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup
}

// NewPool returns a pool building circuits through sw from nodes in dir.
func NewPool(sw *Switch, dir Directory, cfg PoolConfig) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rng := cfg.Rand
	if rng == nil {
		var err error
		if rng, err = seededRand(nil); err != nil {
			return nil, err
		}
	}
	p := &Pool{
		sw:       sw,
		dir:      dir,
		cfg:      cfg,
		streams:  make(map[tunnelKey]*Stream),
		activity: make(map[*Circuit]activity),
		bw:       make(map[proto.NodeID]float64),
		rng:      rng,
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
	}
	sw.subscribe(func(e Event) {
		if e.Origin && e.Kind == EventClosed {
			p.poke()
		}
	})
	if cfg.Guards != nil {
		cfg.Guards.Watch(sw) // set aside guards that builds cannot reach
	}
	return p, nil
}

func (p *Pool) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// BuildTunnels makes the pool keep circuits of hops hops (the TunnelCommunity's
// build_tunnels). Circuits of another length are closed and replaced.
func (p *Pool) BuildTunnels(hops int) error {
	if hops < 1 || hops > p.sw.cfg.MaxRelayEarly+1 {
		return fmt.Errorf("circuits: %d hops", hops)
	}
	p.mu.Lock()
	p.hops = hops
	p.mu.Unlock()
	p.poke()
	return nil
}

// FindCircuits returns the built circuits available to send over.
func (p *Pool) FindCircuits() []*Circuit {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*Circuit
	for _, c := range p.circs {
		select {
		case <-c.Done():
		default:
			if c.Hops() == p.hops {
				out = append(out, c)
			}
		}
	}
	return out
}

// TunnelsReady is the number of available circuits divided by MinCircuits:
// at least 1 means the pool is ready.
func (p *Pool) TunnelsReady() float64 {
	return float64(len(p.FindCircuits())) / float64(p.cfg.MinCircuits)
}

// LastError is the last build failure, for status displays.
func (p *Pool) LastError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastErr
}

// TunnelData sends payload to dest through c (the TunnelCommunity's tunnel_data): a
// service registered at the circuit's last hop, or "ip:port" when the last
// hop is an exit whose policy allows it. The bytes go on a stream the pool
// keeps open per circuit and destination.
// What comes back goes to PoolConfig.OnData.
func (p *Pool) TunnelData(c *Circuit, dest string, payload []byte) error {
	k := tunnelKey{c.handle, dest}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrPoolClosed
	}
	if !slices.Contains(p.circs, c) {
		p.mu.Unlock()
		return ErrNotInPool
	}
	s := p.streams[k]
	p.mu.Unlock()
	if s == nil {
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.BuildTimeout)
		var err error
		s, err = c.OpenStream(ctx, dest)
		cancel()
		if err != nil {
			return err
		}
		p.mu.Lock()
		if old := p.streams[k]; old != nil || p.closed {
			p.mu.Unlock()
			s.Close()
			if old == nil {
				return ErrPoolClosed
			}
			s = old
		} else {
			p.streams[k] = s
			p.wg.Add(1)
			p.mu.Unlock()
			go p.readTunnel(c, k, s)
		}
	}
	_, err := s.Write(payload)
	return err
}

func (p *Pool) readTunnel(c *Circuit, k tunnelKey, s *Stream) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		if p.streams[k] == s {
			delete(p.streams, k)
		}
		p.mu.Unlock()
		s.Close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := s.Read(buf)
		if n > 0 && p.cfg.OnData != nil {
			p.cfg.OnData(c, k.dest, buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// Run enforces the limits every CheckInterval and replaces circuits as
// they close, until ctx ends or Close.
func (p *Pool) Run(ctx context.Context) error {
	t := time.NewTicker(p.cfg.CheckInterval)
	defer t.Stop()
	for {
		p.Check(p.sw.cfg.Now())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.stop:
			return nil
		case <-t.C:
		case <-p.wake:
		}
	}
}

// Check closes circuits past MaxTime, MaxTimeInactive or MaxTraffic (or of
// the wrong length), forgets closed ones, and launches builds up to
// MaxCircuits. Run calls it; tests call it with chosen times.
func (p *Pool) Check(now time.Time) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	var keep, expired []*Circuit
	for _, c := range p.circs {
		select {
		case <-c.Done():
			delete(p.activity, c)
			p.measureLocked(c, now)
			continue
		default:
		}
		st := c.Stats()
		act, seen := p.activity[c]
		if cells := st.CellsSent + st.CellsRecv; !seen || cells != act.cells {
			act = activity{cells: cells, changed: now}
			if !seen {
				act.changed = c.Born()
			}
			p.activity[c] = act
		}
		switch {
		case now.Sub(c.Born()) >= p.cfg.MaxTime,
			now.Sub(act.changed) >= p.cfg.MaxTimeInactive,
			st.BytesSent+st.BytesRecv >= p.cfg.MaxTraffic,
			c.Hops() != p.hops:
			expired = append(expired, c)
			p.measureLocked(c, now)
		default:
			keep = append(keep, c)
			continue
		}
		delete(p.activity, c)
	}
	p.circs = keep
	launch := 0
	if p.hops > 0 {
		launch = p.cfg.MaxCircuits - len(keep) - p.building
	}
	p.building += max(launch, 0)
	// Counted before the lock is released: Close, once it has seen the
	// pool open no more, waits for every build (a WaitGroup's Add after
	// its Wait began is a race, and the build would outlive Close).
	p.wg.Add(max(launch, 0))
	hops := p.hops
	p.mu.Unlock()

	for _, c := range expired {
		c.Close()
	}
	for range launch {
		go p.buildOne(hops)
	}
}

func (p *Pool) buildOne(hops int) {
	defer p.wg.Done()
	c, err := p.tryBuild(hops)
	p.mu.Lock()
	p.building--
	if err != nil {
		p.lastErr = err
		p.mu.Unlock()
		return
	}
	if p.closed {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.circs = append(p.circs, c)
	st := c.Stats()
	p.activity[c] = activity{cells: st.CellsSent + st.CellsRecv, changed: p.sw.cfg.Now()}
	p.mu.Unlock()
}

func (p *Pool) tryBuild(hops int) (*Circuit, error) {
	p.mu.Lock()
	now := p.sw.cfg.Now()
	path, err := PathRules{
		Hops: hops, Self: p.sw.ID(), ExitFlags: p.cfg.ExitFlags, SameSubnet: p.cfg.AllowSameSubnet,
		Guards: p.cfg.Guards, Weight: p.weightLocked(now), Now: now,
	}.Select(p.dir.Nodes(), p.rng)
	timeout := adaptiveTimeout(p.samples, p.cfg.MinBuildTimeout, p.cfg.BuildTimeout)
	p.mu.Unlock()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() {
		select {
		case <-p.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	t0 := p.sw.cfg.Now()
	c, err := p.sw.Build(ctx, path)
	if err == nil {
		p.mu.Lock()
		p.samples = append(p.samples, p.sw.cfg.Now().Sub(t0))
		if len(p.samples) > buildSamplesMax {
			p.samples = p.samples[1:]
		}
		p.mu.Unlock()
	}
	return c, err
}

// BuildTimeout is the timeout the next build gets.
func (p *Pool) BuildTimeout() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return adaptiveTimeout(p.samples, p.cfg.MinBuildTimeout, p.cfg.BuildTimeout)
}

// Close closes the pool's circuits and waits for its goroutines.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	close(p.stop)
	circs := p.circs
	p.circs = nil
	p.mu.Unlock()
	for _, c := range circs {
		c.Close()
	}
	p.wg.Wait()
	return nil
}

// measureMin is the traffic a circuit must have carried for its rate to
// say anything of its hops' bandwidth.
const measureMin = 256 << 10

// measureLocked records the rate c carried, if it carried enough, against
// each of its hops (a circuit runs at its slowest hop's pace: a fast node
// is under-rated by slow company, which the average over many circuits
// evens out). Caller holds mu.
func (p *Pool) measureLocked(c *Circuit, now time.Time) {
	st := c.Stats()
	bytes := st.BytesSent + st.BytesRecv
	d := now.Sub(c.Born()).Seconds()
	if bytes < measureMin || d <= 0 {
		return
	}
	rate := float64(bytes) / d
	for _, h := range c.Path() {
		if old, ok := p.bw[h.ID]; ok {
			rate = 0.7*old + 0.3*rate
		}
		p.bw[h.ID] = rate
	}
	if len(p.bw) > 4096 {
		clear(p.bw) // bounded; measuring starts over
	}
}

// weightLocked is the weight paths are drawn with at now: by the
// bandwidth measured through a node (against the median of those
// measured) and, when the directory knows, by how long the node has been
// known, so that identities made in bulk a moment ago weigh a tenth of
// old ones. Caller holds mu; the function reads p.bw, so it must be used
// under mu too.
func (p *Pool) weightLocked(now time.Time) func(proto.NodeDescriptor) float64 {
	ages, _ := p.dir.(NodeAges)
	var rates []float64
	for _, r := range p.bw {
		rates = append(rates, r)
	}
	med := median(rates)
	if ages == nil && med == 0 {
		return nil // nothing known: uniform
	}
	return func(d proto.NodeDescriptor) float64 {
		w := bandwidthWeight(p.bw[d.ID], med)
		if ages != nil {
			if first, ok := ages.FirstSeen(d.ID); ok {
				w *= ageWeight(first, now)
			}
		}
		return w
	}
}
