package node

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"veil/circuits"
	"veil/cmd/veil/internal/config"
	"veil/proto"
)

func testDescriptors(t testing.TB, n int) []proto.NodeDescriptor {
	var out []proto.NodeDescriptor
	for i := range n {
		id, err := circuits.NewEphemeralIdentity()
		if err != nil {
			t.Fatal(err)
		}
		d, err := id.Descriptor([]netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(7000+i))}, proto.FlagRelay, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// A directory answer round-trips; a cut inside an entry is an error, a
// cut between entries a shorter list.
func TestDirAnswer(t *testing.T) {
	ds := testDescriptors(t, 3)
	b := appendDirAnswer(nil, ds)
	got, err := parseDirAnswer(b)
	if err != nil || len(got) != 3 {
		t.Fatalf("%d descriptors, %v", len(got), err)
	}
	for i := range ds {
		if !bytes.Equal(got[i].Append(nil), ds[i].Append(nil)) || got[i].Verify(time.Now()) != nil {
			t.Fatalf("descriptor %d differs or does not verify", i)
		}
	}
	bounds := map[int]int{0: 0}
	off := 0
	for i, d := range ds {
		off += 2 + d.Len()
		bounds[off] = i + 1
	}
	for k := range len(b) {
		got, err := parseDirAnswer(b[:k])
		if want, ok := bounds[k]; ok {
			if err != nil || len(got) != want {
				t.Fatalf("prefix %d: %d, %v; want %d", k, len(got), err, want)
			}
		} else if !errors.Is(err, errDirAnswer) {
			t.Fatalf("prefix %d: %v", k, err)
		}
	}
	if _, err := parseDirAnswer(make([]byte, maxDirAnswer+1)); !errors.Is(err, errDirAnswer) {
		t.Fatalf("oversized answer: %v", err)
	}
}

func FuzzDirAnswer(f *testing.F) {
	f.Add(appendDirAnswer(nil, testDescriptors(f, 2)))
	f.Add([]byte{0, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		ds, err := parseDirAnswer(b)
		if err != nil {
			return
		}
		if again := appendDirAnswer(nil, ds); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs: %x vs %x", again, b)
		}
	})
}

// The guard of an anonymous node lets through its bridges and the first
// hop of a circuit it is building, nothing else, and counts refusals.
func TestDialGuard(t *testing.T) {
	bridge, other := proto.NodeID{1}, proto.NodeID{2}
	g := newDialGuard(true, []proto.NodeID{bridge})
	if ok, _ := g.allow(bridge); !ok {
		t.Fatal("bridge refused")
	}
	if ok, log := g.allow(other); ok || !log {
		t.Fatalf("other: allowed %v, logged %v", ok, log)
	}
	if ok, log := g.allow(other); ok || log {
		t.Fatalf("other again: allowed %v, logged again %v", ok, log)
	}
	done := g.firstHop(other)
	if ok, _ := g.allow(other); !ok {
		t.Fatal("first hop refused while building")
	}
	done()
	if ok, _ := g.allow(other); ok {
		t.Fatal("first hop still allowed after the build")
	}
	if g.refused.Load() != 3 {
		t.Fatalf("refused %d", g.refused.Load())
	}
	// A reload's bridges replace the old ones.
	g.setBridges([]proto.NodeID{other})
	if ok, _ := g.allow(other); !ok {
		t.Fatal("reloaded bridge refused")
	}
	if ok, _ := g.allow(bridge); ok {
		t.Fatal("a bridge no longer configured allowed")
	}
	if ok, _ := newDialGuard(false, nil).allow(other); !ok {
		t.Fatal("a guard that is off refused")
	}
}

// Start refuses an anonymous configuration that would reveal the user,
// naming the key.
func TestAnonymousStartRefused(t *testing.T) {
	c := testConfig(t, t.TempDir())
	c.Anonymous = true
	_, err := Start(Options{Config: c})
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Key != "roles.relay" || !strings.Contains(err.Error(), "anonymous") {
		t.Fatalf("start: %v", err)
	}
}
