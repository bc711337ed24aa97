package circuits

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"veil/proto"
)

// GuardsFile is where a node keeps its guards, in its data directory.
const GuardsFile = "guards.json"

// GuardConfig sets how a client keeps its guards. Start from
// DefaultGuardConfig.
type GuardConfig struct {
	// N is how many guards a client keeps: its circuits' first hops are
	// drawn from these only.
	N int
	// MaxSampled bounds the guards kept when all N are unreachable:
	// further ones are added, up to this many, rather than build no
	// circuit at all.
	MaxSampled int
	// Lifetime: a guard is replaced at a time drawn between Lifetime/2
	// and Lifetime after it was chosen, so clients do not all rotate at
	// once and no guard watches a client for ever.
	Lifetime time.Duration
	// DownTimeout: a guard absent from the directory (no valid
	// descriptor, or seen going down) this long is dropped.
	DownTimeout time.Duration
	// Path is the file the guards are kept in ("" keeps them in memory).
	Path string
}

// DefaultGuardConfig returns the settings veil runs with: Tor's three
// primary guards, rotated over one to two months.
func DefaultGuardConfig() GuardConfig {
	return GuardConfig{
		N:           3,
		MaxSampled:  6,
		Lifetime:    60 * 24 * time.Hour,
		DownTimeout: 24 * time.Hour,
	}
}

// Guards is a client's small, fixed set of first hops, kept across runs
// in its data directory, as Tor keeps its entry guards. Without them a
// client would draw a fresh first hop for every circuit, so an attacker
// who floods the directory with descriptors of its own nodes would soon
// be some circuit's first hop, and learn the client's address along with
// what the last hop sees. With guards, flooding changes nothing until a
// guard is replaced, and a replacement is drawn with weight to nodes
// known longest. Safe for concurrent use.
type Guards struct {
	cfg GuardConfig

	mu     sync.Mutex // guards list and closed
	list   []guardEntry
	closed bool // Close was called: the file is no longer written
}

// Close stops writing the file (the guards stay usable, their changes
// kept in memory only), waiting for a write in progress: once it
// returns, nothing writes in the data directory on the guards' behalf,
// even a path picked by a goroutine that outlives its node.
func (g *Guards) Close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// guardEntry is one guard, as kept in the file.
type guardEntry struct {
	ID         proto.NodeID `json:"id"`
	Added      time.Time    `json:"added"`
	Expires    time.Time    `json:"expires"`
	LastListed time.Time    `json:"last_listed"`
	// Unreachable: a build could not reach it; it is set aside until then.
	Unreachable time.Time `json:"unreachable_until,omitzero"`
}

// guardRetry is how long a guard that could not be reached is set aside:
// the others (or, if none is left, further guards) start circuits
// meanwhile. It is not dropped for it: an attacker who can make a guard
// unreachable for a moment must not thereby make a client choose anew.
const guardRetry = 10 * time.Minute

// Watch makes g set aside, for guardRetry, a guard that a build through
// sw could not reach (ErrFirstHop): the pool, the exit dialer and the
// node's own builds all report through sw's events.
func (g *Guards) Watch(sw *Switch) {
	sw.subscribe(func(e Event) {
		if e.Kind == EventFailed && e.Origin && e.Hops == 0 && len(e.Path) > 0 && errors.Is(e.Err, ErrFirstHop) {
			g.unreachable(e.Path[0], e.At)
		}
	})
}

// unreachable sets guard id aside until now+guardRetry.
func (g *Guards) unreachable(id proto.NodeID, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := range g.list {
		if g.list[i].ID == id {
			g.list[i].Unreachable = now.Add(guardRetry)
		}
	}
}

// guardFile is the file's layout.
type guardFile struct {
	Version int          `json:"version"`
	Guards  []guardEntry `json:"guards"`
}

// LoadGuards returns the guards kept at cfg.Path (none yet if the file
// does not exist). A file that cannot be read or parsed is an error naming
// it: silently choosing new guards would undo their point.
func LoadGuards(cfg GuardConfig) (*Guards, error) {
	if cfg.N < 1 || cfg.MaxSampled < cfg.N || cfg.Lifetime <= 0 || cfg.DownTimeout <= 0 {
		return nil, fmt.Errorf("circuits: guard config %+v: want N >= 1, MaxSampled >= N and positive durations", cfg)
	}
	g := &Guards{cfg: cfg}
	if cfg.Path == "" {
		return g, nil
	}
	f, err := openNoFollow(cfg.Path, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return g, nil
	}
	if err != nil {
		return nil, fmt.Errorf("circuits: guards file %s: %w", cfg.Path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<16))
	if err != nil {
		return nil, fmt.Errorf("circuits: guards file %s: %w", cfg.Path, err)
	}
	var gf guardFile
	if err := json.Unmarshal(b, &gf); err != nil || gf.Version != 1 || len(gf.Guards) > cfg.MaxSampled*4 {
		return nil, fmt.Errorf("circuits: guards file %s: corrupt (remove it to choose new guards)", cfg.Path)
	}
	g.list = gf.Guards[:min(len(gf.Guards), cfg.MaxSampled)]
	return g, nil
}

// IDs returns the guards' IDs, primary ones first (none for a nil
// *Guards).
func (g *Guards) IDs() []proto.NodeID {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	ids := make([]proto.NodeID, len(g.list))
	for i, e := range g.list {
		ids[i] = e.ID
	}
	return ids
}

// firstHops updates the guards against the nodes usable now (each a relay
// with a valid descriptor and an address) and returns those of the guards
// among them: the only nodes a circuit may start at. Guards past their
// lifetime, or unlisted for DownTimeout, are dropped; missing ones are
// drawn from usable with weight (nil: uniform) and keep out of one
// another's /16 unless sameSubnet. When no guard is usable, further ones
// are added, up to MaxSampled. Changes are saved to the file.
func (g *Guards) firstHops(usable []proto.NodeDescriptor, exclude func(proto.NodeID) bool, sameSubnet bool, weight func(proto.NodeDescriptor) float64, now time.Time, rng *rand.Rand) ([]proto.NodeDescriptor, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	byID := make(map[proto.NodeID]proto.NodeDescriptor, len(usable))
	for _, d := range usable {
		if d.Flags&proto.FlagRelay != 0 {
			byID[d.ID] = d
		}
	}
	changed := false
	keep := g.list[:0]
	for _, e := range g.list {
		if _, ok := byID[e.ID]; ok {
			if now.Sub(e.LastListed) > time.Minute {
				e.LastListed = now
				changed = true
			}
		}
		if !now.Before(e.Expires) || now.Sub(e.LastListed) >= g.cfg.DownTimeout {
			changed = true
			continue
		}
		keep = append(keep, e)
	}
	g.list = keep
	listed := func() (out []proto.NodeDescriptor) {
		for _, e := range g.list {
			if d, ok := byID[e.ID]; ok && !exclude(e.ID) && !now.Before(e.Unreachable) {
				out = append(out, d)
			}
		}
		return out
	}
	add := func() bool {
		used := map[netip.Prefix]bool{}
		inList := map[proto.NodeID]bool{}
		for _, e := range g.list {
			inList[e.ID] = true
			if d, ok := byID[e.ID]; ok {
				used[subnet(d)] = true
			}
		}
		var cands []proto.NodeDescriptor
		for _, d := range usable {
			if d.Flags&proto.FlagRelay == 0 || inList[d.ID] || exclude(d.ID) || (!sameSubnet && used[subnet(d)]) {
				continue
			}
			cands = append(cands, d)
		}
		d, ok := pickWeighted(cands, weight, rng)
		if !ok {
			return false
		}
		life := g.cfg.Lifetime/2 + time.Duration(rng.Int64N(int64(g.cfg.Lifetime/2)+1))
		g.list = append(g.list, guardEntry{ID: d.ID, Added: now, Expires: now.Add(life), LastListed: now})
		changed = true
		return true
	}
	for len(g.list) < g.cfg.N && add() {
	}
	for len(listed()) == 0 && len(g.list) < g.cfg.MaxSampled && add() {
	}
	var err error
	if changed {
		err = g.saveLocked()
	}
	hops := listed()
	if len(hops) == 0 {
		return nil, fmt.Errorf("%w: none of %d guards is usable", ErrNoPath, len(g.list))
	}
	return hops, err
}

// saveLocked writes the guards to the file, atomically. Caller holds mu.
func (g *Guards) saveLocked() error {
	if g.cfg.Path == "" || g.closed {
		return nil
	}
	b, err := json.MarshalIndent(guardFile{Version: 1, Guards: g.list}, "", "  ")
	if err != nil {
		return err
	}
	if err := writeKeyFile(g.cfg.Path, b); err != nil {
		return fmt.Errorf("circuits: saving guards: %w", err)
	}
	return nil
}

// pickWeighted draws one of cands with probability proportional to
// weight (nil: uniform).
func pickWeighted(cands []proto.NodeDescriptor, weight func(proto.NodeDescriptor) float64, rng *rand.Rand) (proto.NodeDescriptor, bool) {
	if len(cands) == 0 {
		return proto.NodeDescriptor{}, false
	}
	if weight == nil {
		return cands[rng.IntN(len(cands))], true
	}
	ws := make([]float64, len(cands))
	total := 0.0
	for i, d := range cands {
		ws[i] = max(weight(d), 0)
		total += ws[i]
	}
	if total <= 0 {
		return cands[rng.IntN(len(cands))], true
	}
	x := rng.Float64() * total
	for i, w := range ws {
		if x < w {
			return cands[i], true
		}
		x -= w
	}
	return cands[len(cands)-1], true
}

// NodeAges is what a Directory may also know: when it first saw each node.
// Path selection then weights nodes by age, so that identities made in
// bulk a moment ago weigh little.
type NodeAges interface {
	FirstSeen(id proto.NodeID) (time.Time, bool)
}

// Age weighting: a node known for ageFull or longer weighs 1, a new one
// ageFloor, in a straight line between.
const (
	ageFull  = 3 * 24 * time.Hour
	ageFloor = 0.1
)

// ageWeight is a node's weight for having been known since first.
func ageWeight(first, now time.Time) float64 {
	age := now.Sub(first)
	if age >= ageFull {
		return 1
	}
	return ageFloor + (1-ageFloor)*max(float64(age), 0)/float64(ageFull)
}

// bandwidthWeight is a node's weight for its measured bandwidth bw (bytes
// a second) against the median of those measured: between a quarter and
// four times the weight of an unmeasured node.
func bandwidthWeight(bw, median float64) float64 {
	if bw <= 0 || median <= 0 {
		return 1
	}
	return min(max(bw/median, 0.25), 4)
}

// median returns the median of xs (0 for none); it sorts a copy.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// openNoFollow opens path without following a symbolic link at its last
// element: a key or state file replaced by a link to elsewhere is refused.
func openNoFollow(path string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW, perm)
	if err != nil && errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%s is a symbolic link: refusing to follow it", path)
	}
	return f, err
}

// CheckDataDir checks that dir (created with mode 0700 if missing) is a
// directory owned by this user and closed to group and others: the keys,
// guards and stores in it are the node's secrets. A directory of ours
// that others may enter is closed (chmod 0700), as Tor does with its data
// directory; one owned by another user is an error that says so.
func CheckDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data directory %s: %w", dir, err)
	}
	fi, err := os.Stat(dir) // a link to a directory is the directory
	if err != nil {
		return fmt.Errorf("data directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("data directory %s: not a directory", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("data directory %s: owned by user %d, not by this user (%d): use a directory of your own", dir, st.Uid, os.Getuid())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("data directory %s: mode %#o lets others in and cannot be changed (%v); run `chmod 700 %s`", dir, perm, err, filepath.Clean(dir))
		}
	}
	return nil
}
