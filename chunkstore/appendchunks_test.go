package chunkstore

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"

	"veil/chunkstore/content"
)

// AppendChunks reads a range in one go: the same bytes and stamps as Chunk
// one by one, across record boundaries and up to a short last chunk; a range
// with any chunk missing appends nothing.
func TestAppendChunks(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 3*GroupChunks*content.ChunkSize+11, 9) // 193 chunks
	s := openTest(t, filepath.Join(t.TempDir(), "s.db"), nil)
	if _, err := s.PutDescriptor(f.d); err != nil {
		t.Fatal(err)
	}
	n := uint64(len(f.chunks))
	if err := s.Ingest(ctx, f.name, f.rng(t, 0, 100)); err != nil {
		t.Fatal(err)
	}
	if err := s.Ingest(ctx, f.name, f.rng(t, 120, n)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	prefix := []byte("kept")
	for _, r := range [][2]uint64{{0, 1}, {0, 100}, {63, 65}, {120, n}, {n - 1, n}, {5, 5}} {
		got, stamps, err := s.AppendChunks(bytes.Clone(prefix), nil, f.name, r[0], r[1])
		if err != nil {
			t.Fatalf("%v: %v", r, err)
		}
		want := bytes.Clone(prefix)
		for i := r[0]; i < r[1]; i++ {
			c, st, err := s.Chunk(f.name, i)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, c...)
			if st != stamps[i-r[0]] {
				t.Errorf("%v: stamp of chunk %d differs from Chunk's", r, i)
			}
		}
		if !bytes.Equal(got, want) || uint64(len(stamps)) != r[1]-r[0] {
			t.Errorf("%v: %d bytes and %d stamps, want %d bytes", r, len(got), len(stamps), len(want))
		}
	}
	for _, r := range [][2]uint64{{90, 110}, {100, 101}, {119, 121}, {n, n + 1}} {
		got, stamps, err := s.AppendChunks(bytes.Clone(prefix), nil, f.name, r[0], r[1])
		if !errors.Is(err, ErrMissing) {
			t.Errorf("%v: err = %v, want ErrMissing", r, err)
		}
		if !bytes.Equal(got, prefix) || len(stamps) != 0 {
			t.Errorf("%v: a failed read appended %d bytes, %d stamps", r, len(got)-len(prefix), len(stamps))
		}
	}
	if _, _, err := s.AppendChunks(nil, nil, f.name, 10, 5); !errors.Is(err, content.ErrBadRange) {
		t.Errorf("reversed range: %v", err)
	}
}
