package chunkstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"veil/chunkstore/content"
	"veil/proto"
)

// corruptFile opens the (closed) store file at path with bbolt directly
// and lets edit change it; cb is the content's bucket.
func corruptFile(t *testing.T, path string, name proto.HashName, edit func(tx *bolt.Tx, cb *bolt.Bucket) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		idb := tx.Bucket(bucketNames).Get(name[:])
		if len(idb) != 8 {
			t.Fatalf("names value of %d bytes before corruption", len(idb))
		}
		return edit(tx, tx.Bucket(bucketContent).Bucket(idb))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCorruptFileGivesErrors: values a damaged file may hold make Store
// methods fail with an error, never panic.
func TestCorruptFileGivesErrors(t *testing.T) {
	const size = 100*content.ChunkSize + 7 // 101 chunks: records 0 (64) and 1 (37)
	cases := []struct {
		name string
		edit func(tx *bolt.Tx, cb *bolt.Bucket, name proto.HashName) error
	}{
		{"short names value", func(tx *bolt.Tx, _ *bolt.Bucket, name proto.HashName) error {
			return tx.Bucket(bucketNames).Put(name[:], []byte{0, 1, 2})
		}},
		{"garbage descriptor", func(_ *bolt.Tx, cb *bolt.Bucket, _ proto.HashName) error {
			return cb.Put(keyDesc, []byte{9, 9, 9})
		}},
		{"no descriptor", func(_ *bolt.Tx, cb *bolt.Bucket, _ proto.HashName) error {
			return cb.Delete(keyDesc)
		}},
		{"short record", func(_ *bolt.Tx, cb *bolt.Bucket, _ proto.HashName) error {
			return cb.Bucket(bucketRecords).Put(u64(0), []byte{0xff, 0xff, 0xff})
		}},
		{"bitmap past the content's end", func(_ *bolt.Tx, cb *bolt.Bucket, _ proto.HashName) error {
			rb := cb.Bucket(bucketRecords)
			rec := bytes.Clone(rb.Get(u64(1)))
			binary.BigEndian.PutUint64(rec, ^uint64(0))
			return rb.Put(u64(1), rec)
		}},
		{"short record key", func(_ *bolt.Tx, cb *bolt.Bucket, _ proto.HashName) error {
			return cb.Bucket(bucketRecords).Put([]byte{0}, []byte{1})
		}},
		{"short node key and value", func(_ *bolt.Tx, cb *bolt.Bucket, _ proto.HashName) error {
			return cb.Bucket(bucketNodes).Put([]byte{0}, []byte{1})
		}},
		{"no records bucket", func(_ *bolt.Tx, cb *bolt.Bucket, _ proto.HashName) error {
			return cb.DeleteBucket(bucketRecords)
		}},
		{"no nodes bucket", func(_ *bolt.Tx, cb *bolt.Bucket, _ proto.HashName) error {
			return cb.DeleteBucket(bucketNodes)
		}},
		{"records bucket is a value", func(_ *bolt.Tx, cb *bolt.Bucket, _ proto.HashName) error {
			if err := cb.DeleteBucket(bucketRecords); err != nil {
				return err
			}
			return cb.Put(bucketRecords, []byte{1})
		}},
		{"content bucket is a value", func(tx *bolt.Tx, _ *bolt.Bucket, name proto.HashName) error {
			id := bytes.Clone(tx.Bucket(bucketNames).Get(name[:]))
			if err := tx.Bucket(bucketContent).DeleteBucket(id); err != nil {
				return err
			}
			return tx.Bucket(bucketContent).Put(id, []byte{1})
		}},
		{"bad head", func(_ *bolt.Tx, cb *bolt.Bucket, _ proto.HashName) error {
			return cb.Put(keyHead, []byte{1})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.db")
			s := openTest(t, path, nil)
			data := newFixture(t, size, 5).data
			_, name, err := s.Publish(context.Background(), testKey(3), "x/y", 1, bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			corruptFile(t, path, name, func(tx *bolt.Tx, cb *bolt.Bucket) error { return tc.edit(tx, cb, name) })
			s = openTest(t, path, nil)
			// Every read path: none may panic; each returns an error or
			// something consistent with what is left.
			s.Descriptor(name)
			s.Progress(name)
			s.Head(name)
			s.Have(name)
			for _, i := range []uint64{0, 63, 64, 100, 101, 127, 128, 1 << 40} {
				s.Chunk(name, i)
			}
			s.Proof(name, 0, 101)
			s.Proof(name, 64, 101)
			s.Check(name)
			if r, err := s.NewReader(context.Background(), name); err == nil {
				ctx, cancel := context.WithCancel(context.Background())
				cancel() // a missing chunk must not wait
				r.ctx = ctx
				io.ReadAll(r)
			}
			s.Names()
			// A damaged content can still be deleted.
			if err := s.Delete(name); err != nil {
				t.Fatalf("delete: %v", err)
			}
			if _, err := s.Descriptor(name); !errors.Is(err, ErrNotFound) {
				t.Fatalf("after delete: %v", err)
			}
		})
	}
}

// TestCorruptFileChunkPastEnd: a stored bitmap claiming slots past a static
// content's last chunk does not make Chunk panic for those chunk numbers.
func TestCorruptFileChunkPastEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s := openTest(t, path, nil)
	data := newFixture(t, 100*content.ChunkSize+7, 5).data
	_, name, err := s.Publish(context.Background(), testKey(3), "x/y", 1, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	corruptFile(t, path, name, func(_ *bolt.Tx, cb *bolt.Bucket) error {
		rb := cb.Bucket(bucketRecords)
		rec := bytes.Clone(rb.Get(u64(1)))
		binary.BigEndian.PutUint64(rec, ^uint64(0))
		return rb.Put(u64(1), rec)
	})
	s = openTest(t, path, nil)
	if c, _, err := s.Chunk(name, 100); err != nil || !bytes.Equal(c, data[100*content.ChunkSize:]) {
		t.Fatalf("last chunk: %v", err)
	}
	for _, i := range []uint64{101, 120, 127} {
		if _, _, err := s.Chunk(name, i); !errors.Is(err, ErrMissing) {
			t.Fatalf("chunk %d past the end: err = %v, want ErrMissing", i, err)
		}
	}
}

// TestCorruptNamesValue: a names value that is not an 8-byte content ID is
// reported as corruption.
func TestCorruptNamesValue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s := openTest(t, path, nil)
	_, name, err := s.Publish(context.Background(), testKey(3), "x/y", 1, bytes.NewReader([]byte("hello")))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	corruptFile(t, path, name, func(tx *bolt.Tx, _ *bolt.Bucket) error {
		return tx.Bucket(bucketNames).Put(name[:], []byte{1})
	})
	s = openTest(t, path, nil)
	if _, err := s.Descriptor(name); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Descriptor: err = %v, want ErrCorrupt", err)
	}
}

// TestCorruptKeysDoNotStopEviction: malformed record and node keys in a
// live stream's buckets do not panic the writer when it evicts old chunks.
func TestCorruptKeysDoNotStopEviction(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "live.db")
	small := func(c *Config) { c.WindowBytes = 16 * content.ChunkSize } // keeps 64 chunks
	s := openTest(t, path, small)
	pub, err := s.NewLivePublisher(testKey(4), "video/webm", 1000)
	if err != nil {
		t.Fatal(err)
	}
	name := pub.Name()
	chunk := bytes.Repeat([]byte{7}, content.ChunkSize)
	if _, err := pub.Append(ctx, 1, bytes.Repeat(chunk, 10)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	corruptFile(t, path, name, func(_ *bolt.Tx, cb *bolt.Bucket) error {
		if err := cb.Bucket(bucketRecords).Put([]byte{0}, []byte{1}); err != nil {
			return err
		}
		return cb.Bucket(bucketNodes).Put([]byte{0}, []byte{1})
	})
	s = openTest(t, path, small)
	pub, err = s.ResumeLivePublisher(testKey(4), name)
	if err != nil {
		t.Fatal(err)
	}
	for step := range 5 {
		if _, err := pub.Append(ctx, uint32(2+step), bytes.Repeat(chunk, 64)); err != nil {
			t.Fatal(err)
		}
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.Chunk(name, 0); !errors.Is(err, ErrMissing) {
		t.Fatalf("old chunk not evicted: %v", err)
	}
	if _, _, err := s.Chunk(name, 10+5*64-1); err != nil {
		t.Fatalf("newest chunk: %v", err)
	}
}

// A damaged record is replaced when its chunks arrive again, instead of
// failing the commit, which left the writer's error sticky and the whole
// store refusing every later range of every content.
func TestCorruptRecordIsRepairedByIngest(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "s.db")
	f := newFixture(t, 150*content.ChunkSize, 6)
	s := openTest(t, path, nil)
	if _, err := s.PutDescriptor(f.d); err != nil {
		t.Fatal(err)
	}
	if err := s.Ingest(ctx, f.name, f.rng(t, 0, 64)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	corruptFile(t, path, f.name, func(_ *bolt.Tx, cb *bolt.Bucket) error {
		return cb.Bucket(bucketRecords).Put(u64(0), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1})
	})
	s = openTest(t, path, nil)
	if _, _, err := s.Chunk(f.name, 3); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damaged record: err = %v, want ErrCorrupt", err)
	}
	for _, r := range [][2]uint64{{0, 64}, {64, 150}} {
		if err := s.Ingest(ctx, f.name, f.rng(t, r[0], r[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("flush after re-ingesting a damaged record: %v", err)
	}
	if n, err := s.Check(f.name); err != nil || n != 150 {
		t.Fatalf("check: %d chunks, %v", n, err)
	}
	if p, count, err := s.Progress(f.name); err != nil || p != 3 || count != 150 {
		t.Fatalf("progress %d, %d chunks counted (%v); want 3, 150", p, count, err)
	}
	if got := readAll(t, s, f.name); !bytes.Equal(got, f.data) {
		t.Fatal("content differs after repair")
	}
}

// FuzzDamagedValues writes an arbitrary key and value where a damaged file
// could hold one (a record, a node, the descriptor, count or head, the
// names entry), then drives every read path and a write: the store returns
// errors but never panics, and its writer keeps working.
func FuzzDamagedValues(f *testing.F) {
	fx := newFixture(f, 150*content.ChunkSize+3, 8)
	f.Add(uint8(0), u64(0), []byte{1, 2, 3})
	f.Add(uint8(0), u64(2), bytes.Repeat([]byte{0xff}, 8+22*content.ChunkSize))
	f.Add(uint8(1), nodeKey(0, 64), []byte{1})
	f.Add(uint8(1), []byte{0}, bytes.Repeat([]byte{7}, 32))
	f.Add(uint8(2), keyDesc, fx.d.Append(nil)[:40])
	f.Add(uint8(3), keyCount, []byte{1, 2})
	f.Add(uint8(4), keyHead, make([]byte, content.HeadSize))
	f.Add(uint8(5), []byte(nil), []byte{0, 0, 0, 0, 0, 0, 0, 9})
	s := openTest(f, filepath.Join(f.TempDir(), "fuzz.db"), func(c *Config) { c.NoSync = true })
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, where uint8, key, value []byte) {
		if _, err := s.PutDescriptor(fx.d); err != nil {
			t.Fatal(err)
		}
		for _, r := range [][2]uint64{{0, 64}, {64, 150}} {
			if err := s.Ingest(ctx, fx.name, fx.rng(t, r[0], r[1])); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		err := s.db.Update(func(tx *bolt.Tx) error {
			cb := tx.Bucket(bucketContent).Bucket(tx.Bucket(bucketNames).Get(fx.name[:]))
			var b *bolt.Bucket
			switch where % 6 {
			case 0:
				b = cb.Bucket(bucketRecords)
			case 1:
				b = cb.Bucket(bucketNodes)
			case 2:
				key, b = keyDesc, cb
			case 3:
				key, b = keyCount, cb
			case 4:
				key, b = keyHead, cb
			case 5:
				key, b = fx.name[:], tx.Bucket(bucketNames)
			}
			if len(key) == 0 || len(key) > bolt.MaxKeySize || len(value) > 1<<20 {
				return nil
			}
			if b.Bucket(key) != nil {
				return nil // a sub-bucket's name: Put would fail
			}
			return b.Put(key, value)
		})
		if err != nil {
			t.Fatal(err)
		}
		s.mu.Lock()
		delete(s.infos, fx.name) // as after a restart
		s.mu.Unlock()
		s.Descriptor(fx.name)
		s.Progress(fx.name)
		s.Have(fx.name)
		for _, i := range []uint64{0, 1, 63, 64, 127, 128, 149, 150, 191, 1 << 33} {
			s.Chunk(fx.name, i)
		}
		s.Proof(fx.name, 0, 150)
		s.Proof(fx.name, 100, 101)
		s.Check(fx.name)
		if r, err := s.NewReader(ctx, fx.name); err == nil {
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			r.ctx = cctx
			io.Copy(io.Discard, r)
		}
		s.Ingest(ctx, fx.name, fx.rng(t, 100, 150))
		if err := s.Flush(ctx); err != nil {
			t.Fatalf("the writer failed after a damaged value: %v", err)
		}
		if err := s.Delete(fx.name); err != nil {
			t.Fatalf("delete: %v", err)
		}
		s.mu.Lock()
		delete(s.infos, fx.name)
		s.mu.Unlock()
	})
}
