package ordb

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"veil/proto"
)

// idStream records the request IDs of the queries written through it.
type idStream struct {
	CellStream
	ids *[]uint64
}

func (s *idStream) WriteCell(cmd proto.RelayCommand, data []byte) error {
	if cmd == proto.RelayDBQuery {
		// A query fits one cell; its request ID ends it, big-endian
		// (what the framing puts before the message does not matter).
		if len(data) < 8 {
			return errors.New("DB_QUERY cell of fewer than 8 bytes")
		}
		*s.ids = append(*s.ids, binary.BigEndian.Uint64(data[len(data)-8:]))
	}
	return s.CellStream.WriteCell(cmd, data)
}

// Fetch draws its request IDs from FetchConfig.Rand: the same seed gives
// the same IDs, in the order the generator yields them.
func TestFetchRequestIDsFromConfigRand(t *testing.T) {
	pub, name, _ := publish(t, 20_000)
	fetch := func() []uint64 {
		var ids []uint64
		s := &idStream{CellStream: serve(t, pub, nil), ids: &ids}
		cfg := FetchConfig{ChunksPerQuery: 8, InFlight: 2, Rand: rand.New(rand.NewPCG(1, 2))}
		if _, err := Fetch(context.Background(), s, name, openStore(t, "r.db"), cfg); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	a, b := fetch(), fetch()
	if len(a) < 2 || !slices.Equal(a, b) {
		t.Fatalf("request IDs differ between two fetches with one seed:\n%v\n%v", a, b)
	}
	want := rand.New(rand.NewPCG(1, 2))
	for i, id := range a {
		if w := want.Uint64(); id != w {
			t.Fatalf("query %d: request ID %#x, want %#x", i, id, w)
		}
	}
}
