package ordb

import (
	"testing"

	"veil/proto"
)

// BenchmarkCoreRelay is one relayed request's whole life at an ORDB with
// 32 holders listed: the query forwarded (rotation), the proof and data
// delivered back, the route closed.
func BenchmarkCoreRelay(b *testing.B) {
	h := hn(1)
	c := newTestCore(b, nil, func(c *Config) { c.MaxRelayed = 1 << 16 })
	for i := range 32 {
		c.HandleInfo(CircuitID(1+i), proto.DBInfo{HashName: h, P: 3}, t0)
	}
	c.Ready()
	p := proto.DBProof{Chunk: 0, NbChunks: 32}
	d := proto.DBData{Chunk: 0, Data: make([]byte, 32*proto.ChunkSize)}
	b.ReportAllocs()
	for i := range b.N {
		id := uint64(i + 1)
		c.HandleQuery(req, query(h, 0, 32, 0, id), t0)
		fw := c.Ready()[0].(Forward)
		c.HandleAnswer(fw.Circuit, id, p, t0)
		c.HandleAnswer(fw.Circuit, id, d, t0)
		if len(c.Ready()) != 2 {
			b.Fatal("answer not delivered")
		}
	}
}

// BenchmarkCoreQueryDuplicate is the cheapest refusal: a request ID
// already relayed.
func BenchmarkCoreQueryDuplicate(b *testing.B) {
	c := newTestCore(b, nil, nil)
	c.HandleQuery(req, query(hn(1), 0, 1, 0, 1), t0)
	c.Ready()
	b.ReportAllocs()
	for range b.N {
		c.HandleQuery(req2, query(hn(1), 0, 1, 0, 1), t0)
		c.Ready()
	}
}
