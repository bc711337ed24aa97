package chunkstore

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"veil/chunkstore/content"
)

// FuzzIngest feeds arbitrary ranges (start, count, proof bytes, a bit to
// flip) to a real store: it never panics, and whatever it accepts is the
// publisher's bytes.
func FuzzIngest(f *testing.F) {
	fx := newFixture(f, 300*content.ChunkSize+11, 21)
	good := fx.rng(f, 40, 140)
	f.Add(uint16(40), uint16(100), good.Proof.Append(nil), uint32(0), false)
	f.Add(uint16(40), uint16(100), good.Proof.Append(nil), uint32(9), true)
	f.Add(uint16(300), uint16(1), fx.rng(f, 300, 301).Proof.Append(nil), uint32(0), false)
	s := openTest(f, filepath.Join(f.TempDir(), "fuzz.db"), func(c *Config) { c.NoSync = true })
	if _, err := s.PutDescriptor(fx.d); err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, start, count uint16, proof []byte, flipAt uint32, flip bool) {
		p, err := content.ParseProof(proof)
		if err != nil {
			return
		}
		lo := uint64(start) % 302
		hi := min(lo+uint64(count)%256, uint64(len(fx.chunks)))
		r := content.Range{Start: lo, Proof: p}
		if hi > lo {
			r.Chunks = append([][]byte(nil), fx.chunks[lo:hi]...)
		}
		if flip && len(r.Chunks) > 0 {
			k := int(flipAt) % len(r.Chunks)
			c := bytes.Clone(r.Chunks[k])
			c[int(flipAt>>8)%len(c)] ^= 1 << (flipAt % 8)
			r.Chunks[k] = c
		}
		err = s.Ingest(ctx, fx.name, r)
		if err == nil && flip && len(r.Chunks) > 0 {
			t.Fatal("tampered range accepted")
		}
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		for i := lo; i < hi; i++ {
			if c, _, err := s.Chunk(fx.name, i); err == nil && !bytes.Equal(c, fx.chunks[i]) {
				t.Fatalf("chunk %d stored wrong", i)
			}
		}
	})
}
