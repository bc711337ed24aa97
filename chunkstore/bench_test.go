package chunkstore

import (
	"context"
	"encoding/binary"
	"io"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"veil/chunkstore/content"
)

// The benchmarks move benchContent bytes per op through a real bbolt file
// with fsync on; b.SetBytes makes them report MB/s. Run together:
//
//	go test -run '^$' -bench 'Publish|Ingest|Read|BoltRaw' -count 5 ./chunkstore
const (
	benchContent = 16 << 20
	benchWindow  = 200 // chunks per GET window
)

func BenchmarkPublish(b *testing.B) {
	f := newFixture(b, benchContent, 1)
	b.SetBytes(benchContent)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := openBench(b, false)
		b.StartTimer()
		if _, _, err := s.Publish(context.Background(), testKey(1), "video/mp4", uint64(i), bytesReader(f.data)); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
}

func BenchmarkIngest(b *testing.B) { benchIngest(b, false) }

// BenchmarkIngestNoSync is BenchmarkIngest without fsync: what the CPU
// allows when the disk does not limit.
func BenchmarkIngestNoSync(b *testing.B) { benchIngest(b, true) }

func benchIngest(b *testing.B, noSync bool) {
	f := newFixture(b, benchContent, 2)
	n := uint64(len(f.chunks))
	var windows []content.Range
	for lo := uint64(0); lo < n; lo += benchWindow {
		r := f.rng(b, lo, min(lo+benchWindow, n))
		// As from the wire: proof bytes parsed, chunks in their own buffers.
		r.Proof, _ = content.ParseProof(r.Proof.Append(nil))
		windows = append(windows, r)
	}
	ctx := context.Background()
	b.SetBytes(benchContent)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := openBench(b, noSync)
		if _, err := s.PutDescriptor(f.d); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		for _, w := range windows {
			if err := s.Ingest(ctx, f.name, w); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
}

func BenchmarkRead(b *testing.B) {
	f := newFixture(b, benchContent, 3)
	s := openBench(b, false)
	defer s.Close()
	_, name, err := s.Publish(context.Background(), testKey(1), "video/mp4", 1, bytesReader(f.data))
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	b.SetBytes(benchContent)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := s.NewReader(context.Background(), name)
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{r}, buf); err != nil || n != benchContent {
			b.Fatal(n, err)
		}
	}
}

// BenchmarkBoltRaw writes the same bytes straight into bbolt: the same
// record values (64 chunks + bitmap), as many per transaction as the
// store's default batch, same options, fsync on. It is the ceiling.
func BenchmarkBoltRaw(b *testing.B) {
	benchBoltRaw(b, GroupChunks, false)
}

// BenchmarkBoltRawNoSync is BenchmarkBoltRaw without fsync.
func BenchmarkBoltRawNoSync(b *testing.B) {
	benchBoltRaw(b, GroupChunks, true)
}

// BenchmarkBoltRawChunkPerKey is the alternative the grouping avoids: one
// 498-byte value per chunk.
func BenchmarkBoltRawChunkPerKey(b *testing.B) {
	benchBoltRaw(b, 1, false)
}

func benchBoltRaw(b *testing.B, group int, noSync bool) {
	val := make([]byte, 8+group*content.ChunkSize)
	for i := range val {
		val[i] = byte(i)
	}
	perTx := max(1, DefaultConfig("").BatchBytes/(group*content.ChunkSize))
	nrec := (benchContent/content.ChunkSize + group - 1) / group
	b.SetBytes(benchContent)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		db, err := bolt.Open(filepath.Join(b.TempDir(), "raw.db"), 0o600, &bolt.Options{NoSync: noSync, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		for r := 0; r < nrec; r += perTx {
			err := db.Update(func(tx *bolt.Tx) error {
				bk, err := tx.CreateBucketIfNotExists([]byte("r"))
				if err != nil {
					return err
				}
				bk.FillPercent = 1
				for k := r; k < min(r+perTx, nrec); k++ {
					if err := bk.Put(binary.BigEndian.AppendUint64(nil, uint64(k)), val); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		db.Close()
		b.StartTimer()
	}
}

func openBench(b *testing.B, noSync bool) *Store {
	b.Helper()
	cfg := DefaultConfig(filepath.Join(b.TempDir(), "bench.db"))
	cfg.NoSync = noSync
	s, err := Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

type byteReader struct{ b []byte }

func bytesReader(b []byte) *byteReader { return &byteReader{b} }

func (r *byteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}
