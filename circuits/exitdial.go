package circuits

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"veil/proto"
)

// ExitDialerConfig sets how an ExitDialer builds and shares exit circuits.
// Start from DefaultExitDialerConfig.
type ExitDialerConfig struct {
	// Hops is the length of exit circuits, the exit included.
	Hops int
	// BuildTimeout bounds one circuit build.
	BuildTimeout time.Duration
	// MaxDirtiness: a circuit that carried a stream this long ago takes
	// no new streams (Tor's MaxCircuitDirtiness); it closes once its
	// streams end.
	MaxDirtiness time.Duration
	// Attempts bounds the exits one stream is tried at, when exits refuse
	// it by policy or cannot resolve its name.
	Attempts int
	// RefusalMemory: an exit that refused a destination is not chosen for
	// it again for this long.
	RefusalMemory time.Duration
	// AllowSameSubnet: as PoolConfig's, for loopback tests.
	AllowSameSubnet bool
	// Guards, if set: as PoolConfig's, every exit circuit starts at one.
	Guards *Guards
	// Rand draws the paths (nil: seeded from crypto/rand).
	Rand *rand.Rand
	// Optimistic: a stream to a destination its circuit's exit has
	// connected to before does not wait for the exit's CONNECTED (see
	// Dial).
	Optimistic bool
}

// DefaultExitDialerConfig returns the settings veil runs with.
func DefaultExitDialerConfig() ExitDialerConfig {
	return ExitDialerConfig{Hops: 3, BuildTimeout: 10 * time.Second, MaxDirtiness: 10 * time.Minute, Attempts: 3, RefusalMemory: time.Hour, Optimistic: true}
}

// maxRefusals bounds the remembered (exit, destination) refusals.
const maxRefusals = 4096

// ExitDialer opens streams through circuits that end at exits (nodes with
// proto.FlagExit), for SOCKS clients. It picks exits whose descriptor's
// port summary holds the destination's port, and remembers the exits that
// refused a destination all the same (their policy refuses the address,
// or the name did not resolve), so that the next try goes elsewhere. Streams with the same isolation key
// share circuits; streams with different keys never do (Tor's
// IsolateSOCKSAuth: the key is the SOCKS username and password), so an
// exit cannot link them by circuit. It keeps one spare circuit built
// (Warm), so a new key does not wait for a build. Safe for concurrent use.
type ExitDialer struct {
	sw  *Switch
	dir Directory
	cfg ExitDialerConfig

	mu       sync.Mutex // guards the fields below
	byKey    map[string][]*exitCirc
	retiring []*exitCirc // no new streams; closed once their streams end
	spare    *Circuit
	building bool
	refused  map[refusal]time.Time
	rng      *rand.Rand
	closed   bool
	wg       sync.WaitGroup

	beginWait time.Duration // optimisticBegin; tests change it
}

type exitCirc struct {
	c     *Circuit
	exit  proto.NodeID
	dirty time.Time // when it took its first stream
	// reached holds destinations its exit connected a stream to (at
	// most maxReached; guarded by ExitDialer.mu).
	reached map[string]struct{}
}

// maxReached bounds the destinations an exit circuit remembers reaching.
const maxReached = 256

// optimisticBegin is how long an optimistic stream's BEGIN waits for the
// client's first bytes, to carry them right behind it, before it goes
// alone (for protocols where the server speaks first).
const optimisticBegin = time.Millisecond

type refusal struct {
	exit proto.NodeID
	dest string
}

// ErrNoExit is wrapped when no known exit can be tried for a destination.
var ErrNoExit = errors.New("circuits: no exit to try")

// NewExitDialer returns a dialer building circuits through sw from nodes in dir.
func NewExitDialer(sw *Switch, dir Directory, cfg ExitDialerConfig) (*ExitDialer, error) {
	if cfg.Hops < 1 || cfg.Hops > sw.cfg.MaxRelayEarly+1 || cfg.BuildTimeout <= 0 || cfg.MaxDirtiness <= 0 || cfg.Attempts < 1 {
		return nil, fmt.Errorf("circuits: exit dialer config %+v: want Hops 1..%d and positive timeouts and Attempts", cfg, sw.cfg.MaxRelayEarly+1)
	}
	rng := cfg.Rand
	if rng == nil {
		var err error
		if rng, err = seededRand(nil); err != nil {
			return nil, err
		}
	}
	return &ExitDialer{sw: sw, dir: dir, cfg: cfg, byKey: map[string][]*exitCirc{}, refused: map[refusal]time.Time{}, rng: rng, beginWait: optimisticBegin}, nil
}

// Dial opens a stream to dest ("HOST:PORT", resolved at the exit) on a
// circuit of isolation key key. When an exit refuses dest by policy,
// cannot resolve it or is no exit, another exit is tried, up to Attempts.
// The error of the last try is returned: a *RefusedError carries the
// exit's END reason (EndExitPolicy when every exit refused dest lately);
// ErrNoExit when the directory knows no exit.
//
// With Optimistic, a stream to a destination the chosen circuit's exit
// connected a stream to before is returned at once, its BEGIN sent with
// the caller's first bytes right behind it (or alone after
// optimisticBegin, for protocols where the server speaks first): a SOCKS
// client's request then crosses the circuit with BEGIN instead of after
// a round trip for CONNECTED. Should that exit refuse it all the same
// (the destination went down), the stream just ends: Read returns
// io.EOF, as if the destination had closed at once; the next stream to
// dest then waits for CONNECTED again.
func (d *ExitDialer) Dial(ctx context.Context, key, dest string) (*Stream, error) {
	var lastErr error
	for range d.cfg.Attempts {
		ec, err := d.circuitFor(ctx, key, dest)
		if err != nil {
			var re *RefusedError
			if lastErr != nil && errors.As(err, &re) {
				return nil, lastErr // what the exits said is the better answer
			}
			return nil, err
		}
		if d.cfg.Optimistic && d.reachedBy(ec, dest) {
			// Refused all the same: the next stream to dest waits for
			// CONNECTED again, so its caller hears why and another exit
			// may be tried.
			s, err := ec.c.ep.beginStream(dest, d.beginWait, func() { d.unreach(ec, dest) })
			if err == nil {
				return s, nil
			}
			if !errors.Is(err, ErrCircuitClosed) {
				return nil, err
			}
			lastErr = err
			continue // the circuit ended meanwhile: another one
		}
		s, err := ec.c.OpenStream(ctx, dest)
		if err == nil {
			d.reach(ec, dest)
			return s, nil
		}
		lastErr = err
		var re *RefusedError
		switch {
		case errors.As(err, &re) && (re.Reason == EndExitPolicy || re.Reason == EndResolveFailed || re.Reason == EndNoService):
			d.refuse(ec.exit, dest)
		case errors.Is(err, ErrCircuitClosed):
		default:
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return nil, lastErr
}

// reachedBy reports whether ec's exit connected a stream to dest before.
func (d *ExitDialer) reachedBy(ec *exitCirc, dest string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := ec.reached[dest]
	return ok
}

// reach records that ec's exit connected a stream to dest.
func (d *ExitDialer) reach(ec *exitCirc, dest string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if ec.reached == nil || len(ec.reached) >= maxReached {
		ec.reached = map[string]struct{}{}
	}
	ec.reached[dest] = struct{}{}
}

// unreach forgets that ec's exit reached dest.
func (d *ExitDialer) unreach(ec *exitCirc, dest string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(ec.reached, dest)
}

func (d *ExitDialer) refuse(exit proto.NodeID, dest string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.refused) >= maxRefusals {
		clear(d.refused)
	}
	d.refused[refusal{exit, dest}] = d.sw.cfg.Now()
}

func (d *ExitDialer) refusedLocked(exit proto.NodeID, dest string, now time.Time) bool {
	t, ok := d.refused[refusal{exit, dest}]
	return ok && now.Sub(t) < d.cfg.RefusalMemory
}

// circuitFor returns a circuit of key whose exit has not refused dest:
// one the key has, else the spare, else a new one.
func (d *ExitDialer) circuitFor(ctx context.Context, key, dest string) (*exitCirc, error) {
	now := d.sw.cfg.Now()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, ErrSwitchClosed
	}
	d.sweepLocked(now)
	for _, ec := range d.byKey[key] {
		if !d.refusedLocked(ec.exit, dest, now) {
			d.mu.Unlock()
			return ec, nil
		}
	}
	if c := d.spare; c != nil && !d.refusedLocked(lastID(c), dest, now) {
		d.spare = nil
		ec := &exitCirc{c: c, exit: lastID(c), dirty: now}
		d.byKey[key] = append(d.byKey[key], ec)
		d.mu.Unlock()
		d.Warm()
		return ec, nil
	}
	path, err := d.pathLocked(dest, now)
	d.mu.Unlock()
	if err != nil {
		return nil, err
	}
	bctx, cancel := context.WithTimeout(ctx, d.cfg.BuildTimeout)
	defer cancel()
	c, err := d.sw.Build(bctx, path)
	if err != nil {
		return nil, fmt.Errorf("building a circuit to exit %s: %w", path[len(path)-1].ID.Short(), err)
	}
	ec := &exitCirc{c: c, exit: lastID(c), dirty: d.sw.cfg.Now()}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		go c.Close()
		return nil, ErrSwitchClosed
	}
	d.byKey[key] = append(d.byKey[key], ec)
	return ec, nil
}

func lastID(c *Circuit) proto.NodeID {
	ids := c.pathIDs()
	return ids[len(ids)-1]
}

// pathLocked draws a path to an exit that has not refused dest.
func (d *ExitDialer) pathLocked(dest string, now time.Time) ([]proto.NodeDescriptor, error) {
	nodes := d.dir.Nodes()
	var exits []proto.NodeDescriptor
	refused := 0
	_, port, _ := SplitExitDest(dest) // 0 for the spare: any port
	for _, n := range nodes {
		if n.Flags&proto.FlagExit == 0 || len(n.ExitPorts) == 0 || n.ID == d.sw.ID() || n.Verify(now) != nil {
			continue
		}
		if _, ok := firstAddr(n); !ok {
			continue
		}
		if dest != "" && (d.refusedLocked(n.ID, dest, now) || !n.AcceptsPort(port)) {
			refused++ // by its summary, or by its word
			continue
		}
		exits = append(exits, n)
	}
	if len(exits) == 0 {
		if refused > 0 {
			// Every exit refused it lately: say so as they did.
			return nil, &RefusedError{Dest: dest, Reason: EndExitPolicy}
		}
		return nil, fmt.Errorf("%w: none among %d nodes known", ErrNoExit, len(nodes))
	}
	var err error
	for _, i := range d.rng.Perm(len(exits)) {
		var p []proto.NodeDescriptor
		rules := PathRules{Hops: d.cfg.Hops, Self: d.sw.ID(), Last: &exits[i], SameSubnet: d.cfg.AllowSameSubnet, Guards: d.cfg.Guards, Now: now}
		if p, err = rules.Select(nodes, d.rng); err == nil {
			return p, nil
		}
	}
	return nil, err
}

// sweepLocked retires circuits past MaxDirtiness or closed, and closes
// retired ones without streams.
func (d *ExitDialer) sweepLocked(now time.Time) {
	for k, list := range d.byKey {
		keep := list[:0]
		for _, ec := range list {
			switch {
			case isDone(ec.c):
			case now.Sub(ec.dirty) >= d.cfg.MaxDirtiness:
				d.retiring = append(d.retiring, ec)
			default:
				keep = append(keep, ec)
			}
		}
		if len(keep) == 0 {
			delete(d.byKey, k)
		} else {
			d.byKey[k] = keep
		}
	}
	if d.spare != nil && isDone(d.spare) {
		d.spare = nil
	}
	keep := d.retiring[:0]
	for _, ec := range d.retiring {
		switch {
		case isDone(ec.c):
		case ec.c.ep.streamCount() == 0:
			go ec.c.Close()
		default:
			keep = append(keep, ec)
		}
	}
	d.retiring = keep
}

func isDone(c *Circuit) bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}

func (e *endpoint) streamCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.streams)
}

// Warm builds a spare exit circuit in the background if there is none
// (nor one being built) and the directory knows an exit; it also retires
// old circuits. Call it when exits may have appeared.
func (d *ExitDialer) Warm() {
	now := d.sw.cfg.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	d.sweepLocked(now)
	if d.spare != nil || d.building {
		return
	}
	path, err := d.pathLocked("", now)
	if err != nil {
		return
	}
	d.building = true
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), d.cfg.BuildTimeout)
		defer cancel()
		c, err := d.sw.Build(ctx, path)
		d.mu.Lock()
		defer d.mu.Unlock()
		d.building = false
		if err != nil {
			return
		}
		if d.closed || d.spare != nil {
			go c.Close()
			return
		}
		d.spare = c
	}()
}

// NewIdentity makes every later stream use circuits built after it (Tor's
// NEWNYM): the circuits in use take no new streams and close once their
// streams end.
func (d *ExitDialer) NewIdentity() {
	d.mu.Lock()
	for _, list := range d.byKey {
		d.retiring = append(d.retiring, list...)
	}
	clear(d.byKey)
	if d.spare != nil {
		go d.spare.Close()
		d.spare = nil
	}
	d.sweepLocked(d.sw.cfg.Now())
	d.mu.Unlock()
	d.Warm()
}

// Circuits returns the open circuits each isolation key uses now (for
// status displays and tests).
func (d *ExitDialer) Circuits() map[string][]*Circuit {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string][]*Circuit{}
	for k, list := range d.byKey {
		for _, ec := range list {
			if !isDone(ec.c) {
				out[k] = append(out[k], ec.c)
			}
		}
	}
	return out
}

// Close closes every circuit of the dialer and waits for its builds.
func (d *ExitDialer) Close() error {
	d.mu.Lock()
	d.closed = true
	var all []*Circuit
	for _, list := range d.byKey {
		for _, ec := range list {
			all = append(all, ec.c)
		}
	}
	for _, ec := range d.retiring {
		all = append(all, ec.c)
	}
	if d.spare != nil {
		all = append(all, d.spare)
	}
	d.byKey, d.retiring, d.spare = map[string][]*exitCirc{}, nil, nil
	d.mu.Unlock()
	d.wg.Wait()
	for _, c := range all {
		c.Close()
	}
	return nil
}
