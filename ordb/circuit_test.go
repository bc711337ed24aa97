package ordb

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"veil/circuits"
	"veil/circuits/link"
	"veil/proto"
)

// ordbNode is a node on 127.0.0.1 with a switch; its services are the
// test's.
type ordbNode struct {
	sw   *circuits.Switch
	desc proto.NodeDescriptor
}

func newORDBNode(t testing.TB) *ordbNode {
	t.Helper()
	return newORDBNodeWith(t, link.DefaultConfig())
}

// newORDBNodeWith is newORDBNode with the links configured by lcfg.
func newORDBNodeWith(t testing.TB, lcfg link.Config) *ordbNode {
	t.Helper()
	id, err := circuits.NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	links := link.NewLinks(id.Key, lcfg)
	cfg := circuits.DefaultSwitchConfig()
	cfg.Flags = proto.FlagRelay | proto.FlagORDB
	cfg.AllowPrivateExtend = true // extends to 127.0.0.1
	sw, err := circuits.NewSwitch(id, links, cfg)
	if err != nil {
		t.Fatal(err)
	}
	links.SetHandlers(link.Handlers{Cell: sw.HandleCell, Closed: sw.HandleClosed})
	a, err := links.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	desc, err := id.Descriptor([]netip.AddrPort{netip.MustParseAddrPort(a.String())}, cfg.Flags, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sw.Close(); links.Close() })
	return &ordbNode{sw: sw, desc: desc}
}

func buildTo(t *testing.T, from, to *ordbNode) *circuits.Circuit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := from.sw.Build(ctx, []proto.NodeDescriptor{to.desc})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The ORDB Server's goroutine ends when its circuit dies, whether it was
// waiting for a query (a silent peer) or blocked sending answers the peer
// never reads (its stream window shut).
func TestServerEndsWhenCircuitDies(t *testing.T) {
	pub, name, _ := publish(t, 498*640)
	for _, tc := range []struct {
		name    string
		queries int
	}{{"silent peer", 0}, {"peer that never reads", 40}} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newORDBNode(t), newORDBNode(t)
			served := make(chan error, 1)
			started := make(chan struct{}, 1)
			b.sw.Handle("ordb", func(s *circuits.Stream) {
				started <- struct{}{}
				served <- (&Server{Store: pub}).Serve(s)
			})
			c := buildTo(t, a, b)
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			s, err := c.OpenStream(ctx, "ordb")
			if err != nil {
				t.Fatal(err)
			}
			<-started
			m := newMsgConn(s)
			for i := range tc.queries {
				// 40 queries of 64 chunks answer ~2600 cells: far past the
				// stream window of 500 the server may send unread.
				q := proto.DBQuery{HashName: name, Chunk: uint32(i%10) * 64, NbChunks: 64, RequestID: uint64(i)}
				if err := m.send(q); err != nil {
					t.Fatal(err)
				}
			}
			c.Close()
			select {
			case <-served:
			case <-time.After(20 * time.Second):
				t.Fatal("Serve still running after its circuit was destroyed")
			}
		})
	}
}

// Fetch over a circuit to an ORDB that never answers returns once its
// context ends.
func TestFetchHonoursContextWithSilentORDB(t *testing.T) {
	a, b := newORDBNode(t), newORDBNode(t)
	got := make(chan struct{}, 1)
	b.sw.Handle("ordb", func(s *circuits.Stream) {
		buf := make([]byte, proto.RelayDataSize)
		if _, _, err := s.ReadCell(buf); err == nil {
			got <- struct{}{}
		}
		for {
			if _, _, err := s.ReadCell(buf); err != nil {
				return
			}
		}
	})
	c := buildTo(t, a, b)
	defer c.Close()
	octx, ocancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer ocancel()
	s, err := c.OpenStream(octx, "ordb")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-got; cancel() }()
	done := make(chan error, 1)
	go func() {
		_, err := Fetch(ctx, s, proto.HashName{7}, openStore(t, "r.db"), FetchConfig{})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Fetch did not return after its context ended")
	}
}
