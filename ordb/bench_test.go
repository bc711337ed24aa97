package ordb

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"veil/chunkstore"
	"veil/circuits"
	"veil/proto"
)

// BenchmarkFetch3Hop is the main job end to end: a requester fetches 8 MiB
// from an ORDB at the end of a 3-hop circuit on 127.0.0.1, verifying every
// range and storing it in a fresh bbolt file with fsync on. Compare with
// circuits' BenchmarkCircuit3Hop (the same circuit carrying raw bytes) and
// chunkstore's BenchmarkIngest (verify + store without a network).
func BenchmarkFetch3Hop(b *testing.B) {
	const size = 8 << 20
	pub, name, _ := publish(b, size)
	nodes := make([]*ordbNode, 4)
	for i := range nodes {
		nodes[i] = newORDBNode(b)
	}
	srv := &Server{Store: pub}
	nodes[3].sw.Handle("ordb", func(s *circuits.Stream) { srv.Serve(s) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := nodes[0].sw.Build(ctx, []proto.NodeDescriptor{nodes[1].desc, nodes[2].desc, nodes[3].desc})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for _, inFlight := range []int{4, 8, 16} {
		b.Run(fmt.Sprintf("inflight=%d", inFlight), func(b *testing.B) {
			b.SetBytes(size)
			for i := 0; b.Loop(); i++ {
				st, err := chunkstore.Open(chunkstore.DefaultConfig(filepath.Join(b.TempDir(), fmt.Sprintf("r%d.db", i))))
				if err != nil {
					b.Fatal(err)
				}
				s, err := c.OpenStream(ctx, "ordb")
				if err != nil {
					b.Fatal(err)
				}
				if _, err := Fetch(ctx, s, name, st, FetchConfig{InFlight: inFlight}); err != nil {
					b.Fatal(err)
				}
				st.Close()
			}
		})
	}
}
