package circuits

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"veil/proto"
)

// descAt makes a verified descriptor of a fresh node at ip:7700 (no
// listener: path selection only).
func descAt(t testing.TB, ip string, flags uint8, now time.Time) proto.NodeDescriptor {
	t.Helper()
	id, err := NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	d, err := id.DescriptorAt(now, []netip.AddrPort{netip.MustParseAddrPort(ip + ":7700")}, flags, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// A client's first hops come from its few guards, kept in its data
// directory: a flood of descriptors from a Sybil's nodes makes none of
// them a first hop, while without guards nearly every circuit would start
// at one. Guards past their lifetime, or gone from the directory for
// DownTimeout, are replaced; a damaged or linked guards file is refused.
func TestGuards(t *testing.T) {
	now := time.Now()
	rng := rand.New(rand.NewPCG(1, 2))
	var honest []proto.NodeDescriptor
	for i := range 10 {
		honest = append(honest, descAt(t, fmt.Sprintf("%d.1.0.1", 11+i), proto.FlagRelay|proto.FlagORDB, now))
	}
	cfg := DefaultGuardConfig()
	cfg.DownTimeout = 6 * time.Hour // within the test descriptors' day
	cfg.Path = filepath.Join(t.TempDir(), GuardsFile)
	g, err := LoadGuards(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rules := PathRules{Hops: 3, ExitFlags: proto.FlagORDB, Guards: g, Now: now}
	firsts := func(r PathRules, nodes []proto.NodeDescriptor, n int) map[proto.NodeID]int {
		t.Helper()
		seen := map[proto.NodeID]int{}
		for range n {
			p, err := r.Select(nodes, rng)
			if err != nil {
				t.Fatal(err)
			}
			seen[p[0].ID]++
		}
		return seen
	}
	first := firsts(rules, honest, 30)
	guards := g.IDs()
	if len(guards) != cfg.N {
		t.Fatalf("%d guards, want %d", len(guards), cfg.N)
	}
	for id := range first {
		if !slices.Contains(guards, id) {
			t.Fatalf("first hop %s is not a guard", id.Short())
		}
	}

	// The Sybil floods the directory with 100 nodes of its own.
	nodes := slices.Clone(honest)
	sybil := map[proto.NodeID]bool{}
	for i := range 100 {
		d := descAt(t, fmt.Sprintf("%d.%d.0.1", 100+i/200, i%200), proto.FlagRelay|proto.FlagORDB, now)
		sybil[d.ID] = true
		nodes = append(nodes, d)
	}
	for id := range firsts(rules, nodes, 50) {
		if sybil[id] {
			t.Fatalf("a Sybil node (%s) became a first hop", id.Short())
		}
		if !slices.Contains(guards, id) {
			t.Fatalf("first hop %s is not a guard", id.Short())
		}
	}
	// Without guards, the flood works: that is what they are for.
	noGuards := rules
	noGuards.Guards = nil
	hit := 0
	for id, n := range firsts(noGuards, nodes, 50) {
		if sybil[id] {
			hit += n
		}
	}
	if hit < 35 {
		t.Fatalf("without guards only %d of 50 first hops were Sybils: the test shows nothing", hit)
	}

	// The guards are kept across runs.
	g2, err := LoadGuards(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(g2.IDs(), guards) {
		t.Fatalf("reloaded guards %v, want %v", g2.IDs(), guards)
	}
	if fi, err := os.Stat(cfg.Path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("guards file: %v, mode %v", err, fi.Mode())
	}

	// A guard gone from the directory stays a guard for DownTimeout, then
	// is replaced; meanwhile paths start at the others.
	gone := guards[0]
	without := slices.DeleteFunc(slices.Clone(honest), func(d proto.NodeDescriptor) bool { return d.ID == gone })
	r2 := PathRules{Hops: 3, ExitFlags: proto.FlagORDB, Guards: g2, Now: now.Add(time.Hour)}
	for id := range firsts(r2, without, 20) {
		if id == gone || !slices.Contains(guards, id) {
			t.Fatalf("first hop %s while guard %s is away", id.Short(), gone.Short())
		}
	}
	if ids := g2.IDs(); !slices.Contains(ids, gone) || len(ids) != cfg.N {
		t.Fatalf("a guard away for an hour was dropped: %v", ids)
	}
	r2.Now = now.Add(cfg.DownTimeout + 2*time.Hour)
	firsts(r2, without, 1)
	if ids := g2.IDs(); slices.Contains(ids, gone) || len(ids) != cfg.N {
		t.Fatalf("a guard away for DownTimeout was kept: %v", ids)
	}

	// Past their lifetime, all are replaced.
	fresh := make([]proto.NodeDescriptor, 0, len(honest))
	later := now.Add(cfg.Lifetime + time.Hour)
	for i := range 10 {
		fresh = append(fresh, descAt(t, fmt.Sprintf("%d.2.0.1", 11+i), proto.FlagRelay|proto.FlagORDB, later))
	}
	old := g2.IDs()
	r3 := PathRules{Hops: 3, ExitFlags: proto.FlagORDB, Guards: g2, Now: later}
	firsts(r3, append(slices.Clone(fresh), honest...), 1) // honest's descriptors have expired by then
	for _, id := range g2.IDs() {
		if slices.Contains(old, id) {
			t.Fatalf("guard %s kept past its lifetime", id.Short())
		}
	}

	// A damaged file is an error naming it, not a silent new choice.
	if err := os.WriteFile(cfg.Path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadGuards(cfg); err == nil || !strings.Contains(err.Error(), cfg.Path) {
		t.Fatalf("corrupt guards file: %v", err)
	}
	// A symbolic link in its place is not followed.
	os.Remove(cfg.Path)
	target := filepath.Join(t.TempDir(), "elsewhere.json")
	if err := os.WriteFile(target, []byte(`{"version":1,"guards":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, cfg.Path); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadGuards(cfg); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("guards file as a symbolic link: %v", err)
	}
}

// Weights: nodes known longer and measured faster are drawn more often.
func TestPathWeights(t *testing.T) {
	now := time.Now()
	if w := ageWeight(now, now); w != ageFloor {
		t.Fatalf("new node weighs %v", w)
	}
	if w := ageWeight(now.Add(-ageFull), now); w != 1 {
		t.Fatalf("old node weighs %v", w)
	}
	if bandwidthWeight(0, 100) != 1 || bandwidthWeight(1000, 100) != 4 || bandwidthWeight(1, 100) != 0.25 {
		t.Fatal("bandwidth weights")
	}
	a := descAt(t, "11.1.0.1", proto.FlagRelay, now)
	b := descAt(t, "12.1.0.1", proto.FlagRelay, now)
	rng := rand.New(rand.NewPCG(3, 4))
	counts := map[proto.NodeID]int{}
	w := func(d proto.NodeDescriptor) float64 {
		if d.ID == a.ID {
			return ageWeight(now.Add(-ageFull), now)
		}
		return ageWeight(now, now)
	}
	for range 1000 {
		d, _ := pickWeighted([]proto.NodeDescriptor{a, b}, w, rng)
		counts[d.ID]++
	}
	if counts[a.ID] < 850 {
		t.Fatalf("the old node was drawn %d of 1000 times, the new one %d", counts[a.ID], counts[b.ID])
	}
}

// A descriptor valid longer than its onion key lives is refused by path
// selection, and Descriptor will not make one.
func TestDescriptorValidityBounded(t *testing.T) {
	id, err := NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	addrs := []netip.AddrPort{netip.MustParseAddrPort("11.1.0.1:7700")}
	if _, err := id.DescriptorAt(now, addrs, proto.FlagRelay, 30*24*time.Hour); err == nil {
		t.Fatal("a 30-day descriptor was made")
	}
	d, err := id.DescriptorAt(now, addrs, proto.FlagRelay, OnionKeyLifetime)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyDescriptor(d, now); err != nil {
		t.Fatal(err)
	}
	d.ValidUntil += uint64(30 * 24 * time.Hour / time.Second) // as a peer could sign it
	d.Sign(id.Key)
	if err := VerifyDescriptor(d, now); err == nil {
		t.Fatal("a descriptor valid for five weeks verified")
	}
	if _, err := SelectPath([]proto.NodeDescriptor{d}, 1, proto.NodeID{}, proto.FlagRelay, false, now, rand.New(rand.NewPCG(1, 1))); err == nil {
		t.Fatal("path selection took a descriptor valid for five weeks")
	}
	// An onion key made long ago caps the descriptor at its end.
	id.mu.Lock()
	id.onionCreated = now.Add(-OnionKeyLifetime)
	id.mu.Unlock()
	d, err = id.DescriptorAt(now, addrs, proto.FlagRelay, 3*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if end := id.OnionCreated().Add(OnionKeyLifetime + OnionKeyGrace).Unix(); int64(d.ValidUntil) != end {
		t.Fatalf("descriptor valid until %d, its key ends at %d", d.ValidUntil, end)
	}
}

// Key files are not read through symbolic links, and a data directory
// others may enter is closed.
func TestKeyFilesNoFollowAndDataDirMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := LoadOrCreateIdentity(dir); err != nil {
		t.Fatal(err)
	}
	// Replace the identity key by a link to a copy elsewhere.
	key := filepath.Join(dir, IdentityKeyFile)
	b, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "stolen.key")
	if err := os.WriteFile(other, b, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(key)
	if err := os.Symlink(other, key); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateIdentity(dir); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("identity key behind a link: %v", err)
	}
	os.Remove(key)
	// A directory open to others is closed to them.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateIdentity(dir); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("data directory left at %v", fi.Mode().Perm())
	}
	// A file where the directory should be is a clear error.
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, nil, 0o600)
	if err := CheckDataDir(notDir); err == nil || !strings.Contains(err.Error(), notDir) {
		t.Fatalf("a file as data directory: %v", err)
	}
}

// A guard that a build cannot reach is set aside for a while (kept, not
// replaced): paths start at the others meanwhile, and at it again later.
func TestGuardUnreachableSetAside(t *testing.T) {
	noLeaks(t)
	client := newNet(t, 1, nil)[0]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close() // nothing listens there now
	did, err := NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	dead, err := did.DescriptorAt(now, []netip.AddrPort{deadAddr}, proto.FlagRelay|proto.FlagORDB, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	others := []proto.NodeDescriptor{descAt(t, "11.1.0.1", proto.FlagRelay|proto.FlagORDB, now), descAt(t, "12.1.0.1", proto.FlagRelay|proto.FlagORDB, now)}
	g, err := LoadGuards(DefaultGuardConfig())
	if err != nil {
		t.Fatal(err)
	}
	g.Watch(client.sw)
	g.list = []guardEntry{{ID: dead.ID, Added: now, Expires: now.Add(time.Hour), LastListed: now}}

	ctx, cancel := context.WithTimeout(context.Background(), circWait)
	defer cancel()
	if _, err := client.sw.Build(ctx, []proto.NodeDescriptor{dead}); !errors.Is(err, ErrFirstHop) {
		t.Fatalf("build through the dead guard: %v", err)
	}
	nodes := append([]proto.NodeDescriptor{dead}, others...)
	rng := rand.New(rand.NewPCG(5, 6))
	r := PathRules{Hops: 2, ExitFlags: proto.FlagORDB, SameSubnet: true, Guards: g, Now: time.Now()}
	for range 20 {
		p, err := r.Select(nodes, rng)
		if err != nil {
			t.Fatal(err)
		}
		if p[0].ID == dead.ID {
			t.Fatal("a path starts at the guard that could not be reached")
		}
	}
	if !slices.Contains(g.IDs(), dead.ID) {
		t.Fatal("the unreachable guard was dropped")
	}
	r.Now = time.Now().Add(guardRetry + time.Minute)
	seen := false
	for range 40 {
		if p, err := r.Select(nodes, rng); err == nil && p[0].ID == dead.ID {
			seen = true
			break
		}
	}
	if !seen {
		t.Fatal("the guard set aside is not used again after guardRetry")
	}
}

// Once closed, guards still pick first hops but no longer write their
// file: a node's data directory is left alone after its Close, even by a
// path picked by a goroutine that outlives the node.
func TestGuardsClosedWriteNothing(t *testing.T) {
	now := time.Now()
	rng := rand.New(rand.NewPCG(3, 4))
	var nodes []proto.NodeDescriptor
	for i := range 6 {
		nodes = append(nodes, descAt(t, fmt.Sprintf("%d.2.0.1", 11+i), proto.FlagRelay|proto.FlagORDB, now))
	}
	dir := t.TempDir()
	cfg := DefaultGuardConfig()
	cfg.Path = filepath.Join(dir, GuardsFile)
	g, err := LoadGuards(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.Close()
	rules := PathRules{Hops: 3, ExitFlags: proto.FlagORDB, Guards: g, Now: now}
	p, err := rules.Select(nodes, rng)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(g.IDs(), p[0].ID) {
		t.Fatalf("first hop %s is not a guard", p[0].ID.Short())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("closed guards wrote %v", ents)
	}
	// The same choice on open guards writes the file: the check above
	// would see it.
	g2, err := LoadGuards(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rules.Guards = g2
	if _, err := rules.Select(nodes, rng); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cfg.Path); err != nil {
		t.Fatalf("open guards: %v", err)
	}
}
