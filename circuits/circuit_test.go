package circuits

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"veil/circuits/link"
	"veil/proto"
)

// circWait bounds every wait in the circuit tests.
const circWait = 20 * time.Second

// noLeaks fails the test if goroutines it started still run after its
// cleanups (bounded wait). Call it first so its cleanup runs last.
func noLeaks(t testing.TB) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(circWait)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("goroutine leak: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// cnode is one node of a test network: identity, links, switch.
type cnode struct {
	id    *Identity
	links *link.Links
	sw    *Switch
	desc  proto.NodeDescriptor
	cfg   SwitchConfig

	mu     sync.Mutex
	events []Event
}

func (n *cnode) eventsOf(kind EventKind) []Event {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []Event
	for _, e := range n.events {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// newNet starts n nodes on 127.0.0.1, each with an echo service and a sink.
func newNet(t testing.TB, n int, tweak func(i int, cfg *SwitchConfig)) []*cnode {
	t.Helper()
	nodes := make([]*cnode, n)
	for i := range nodes {
		id, err := NewEphemeralIdentity()
		if err != nil {
			t.Fatal(err)
		}
		cn := &cnode{id: id, links: link.NewLinks(id.Key, link.DefaultConfig())}
		cfg := DefaultSwitchConfig()
		cfg.Flags = proto.FlagRelay | proto.FlagORDB
		cfg.AllowPrivateExtend = true // every node is on 127.0.0.1
		cfg.OnEvent = func(e Event) {
			cn.mu.Lock()
			cn.events = append(cn.events, e)
			cn.mu.Unlock()
		}
		if tweak != nil {
			tweak(i, &cfg)
		}
		cn.cfg = cfg
		sw, err := NewSwitch(id, cn.links, cfg)
		if err != nil {
			t.Fatal(err)
		}
		cn.sw = sw
		cn.links.SetHandlers(link.Handlers{Cell: sw.HandleCell, Closed: sw.HandleClosed})
		a, err := cn.links.Listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ap := netip.MustParseAddrPort(a.String())
		cn.desc, err = id.Descriptor([]netip.AddrPort{ap}, cfg.Flags, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		sw.Handle("echo", echoService)
		sw.Handle("sink", func(s *Stream) { io.Copy(io.Discard, s) })
		nodes[i] = cn
		t.Cleanup(func() {
			cn.sw.Close()
			cn.links.Close()
		})
	}
	return nodes
}

func echoService(s *Stream) { io.Copy(s, s) }

func descs(nodes ...*cnode) []proto.NodeDescriptor {
	var d []proto.NodeDescriptor
	for _, n := range nodes {
		d = append(d, n.desc)
	}
	return d
}

func build(t testing.TB, from *cnode, path ...*cnode) *Circuit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), circWait)
	defer cancel()
	c, err := from.sw.Build(ctx, descs(path...))
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	return c
}

// echoCheck sends size random bytes on a new echo stream and checks they
// come back intact.
func echoCheck(c *Circuit, size int, seed uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), circWait)
	defer cancel()
	s, err := c.OpenStream(ctx, "echo")
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer s.Close()
	s.SetReadDeadline(time.Now().Add(circWait))
	want := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range want {
		want[i] = byte(r.Uint32())
	}
	werr := make(chan error, 1)
	go func() {
		_, err := s.Write(want)
		werr <- err
	}()
	got := make([]byte, size)
	if _, err := io.ReadFull(s, got); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if !bytes.Equal(got, want) {
		return errEchoDiffers
	}
	return nil
}

// errEchoDiffers is echoCheck's error when other bytes came back.
var errEchoDiffers = errors.New("echo returned other bytes")

func TestCircuitsCarryDataManyStreams(t *testing.T) {
	noLeaks(t)
	nodes := newNet(t, 8, nil)
	for hops := 1; hops <= 3; hops++ {
		t.Run(fmt.Sprintf("%dhop", hops), func(t *testing.T) {
			c := build(t, nodes[0], nodes[1+hops:1+2*hops]...)
			if c.Hops() != hops {
				t.Fatalf("built %d hops", c.Hops())
			}
			var wg sync.WaitGroup
			errs := make(chan error, 16)
			for i := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := echoCheck(c, 20000+i*3001, uint64(i)); err != nil {
						errs <- err
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			st := c.Stats()
			if st.BytesRecv < 16*20000 || st.BytesSent < 16*20000 {
				t.Errorf("stats %+v", st)
			}
			// The origin lists the circuit; each hop counts the relay
			// cells it carried for it: those the origin sent, but for
			// the few of the build that the hops before it took. (The
			// origin's last cells may still be on their way.)
			if !slices.Contains(nodes[0].sw.Origins(), c) {
				t.Errorf("Origins lacks the circuit")
			}
			want := st.CellsSent - uint64(hops)
			for _, hop := range nodes[1+hops : 1+2*hops] {
				rs := hop.sw.RelayedStats()
				for deadline := time.Now().Add(5 * time.Second); rs.CellsRecv < want && time.Now().Before(deadline); rs = hop.sw.RelayedStats() {
					time.Sleep(time.Millisecond)
				}
				if rs.CellsRecv < want || rs.CellsSent == 0 {
					t.Errorf("hop relayed %+v, origin sent %d cells, want at least %d", rs, st.CellsSent, want)
				}
			}
			c.Close()
		})
	}
	if n := len(nodes[0].eventsOf(EventBuilt)); n != 3 {
		t.Errorf("%d built events", n)
	}
}
