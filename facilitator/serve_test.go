package facilitator

import (
	"bytes"
	"context"
	"errors"
	"io"
	"iter"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"veil/proto"
)

// pipeEnd is one end of an in-memory stream: cells as they would cross a
// circuit.
type pipeEnd struct {
	in, out chan pipeCell
	once    *sync.Once
	done    chan struct{}
}

type pipeCell struct {
	cmd  proto.RelayCommand
	data []byte
}

func pipe() (*pipeEnd, *pipeEnd) {
	ab, ba := make(chan pipeCell, 64), make(chan pipeCell, 64)
	once, done := new(sync.Once), make(chan struct{})
	return &pipeEnd{in: ba, out: ab, once: once, done: done}, &pipeEnd{in: ab, out: ba, once: once, done: done}
}

func (p *pipeEnd) ReadCell(buf []byte) (proto.RelayCommand, int, error) {
	select {
	case c := <-p.in:
		return c.cmd, copy(buf, c.data), nil
	case <-p.done:
		return 0, 0, io.EOF
	}
}

func (p *pipeEnd) WriteCell(cmd proto.RelayCommand, data []byte) error {
	select {
	case p.out <- pipeCell{cmd, bytes.Clone(data)}:
		return nil
	case <-p.done:
		return io.ErrClosedPipe
	}
}

func (p *pipeEnd) Close() error { p.once.Do(func() { close(p.done) }); return nil }

// direct opens streams straight to a Server (no ORDB, no circuit).
func direct(s *Server) func(context.Context, int) (Stream, error) {
	return func(context.Context, int) (Stream, error) {
		a, b := pipe()
		go s.Serve(b)
		return a, nil
	}
}

// tamperFetcher hands out a transfer whose piece tamperPiece has one byte
// flipped, or whose info is another torrent's: a facilitator that lies.
type tamperFetcher struct {
	Fetcher
	piece int
	info  *Info
}

type tamperTransfer struct {
	Transfer
	f *tamperFetcher
}

func (f *tamperFetcher) Open(ctx context.Context, ih InfoHash, o OpenOptions) (Transfer, error) {
	tr, err := f.Fetcher.Open(ctx, ih, o)
	if err != nil {
		return nil, err
	}
	return tamperTransfer{tr, f}, nil
}

func (t tamperTransfer) Info() *Info {
	if t.f.info != nil {
		return t.f.info
	}
	return t.Transfer.Info()
}

func (t tamperTransfer) Pieces(ctx context.Context, first, end int) iter.Seq2[Piece, error] {
	return func(yield func(Piece, error) bool) {
		for p, err := range t.Transfer.Pieces(ctx, first, end) {
			if err == nil && p.Index == t.f.piece {
				p.Data = bytes.Clone(p.Data)
				p.Data[len(p.Data)/2] ^= 1
			}
			if !yield(p, err) {
				return
			}
		}
	}
}

func newTestServer(t *testing.T, f Fetcher) *Server {
	s, err := NewServer(ServerConfig{Fetcher: f, Linger: time.Second, DataChunks: 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newTestClient(t *testing.T, seeders ...netip.AddrPort) *Client {
	cfg := testConfig()
	cfg.Peers = seeders
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A requester gets a whole torrent, one file by path and one by index
// through a Server, byte for byte, each piece checked; a piece length
// that is no multiple of the chunk size makes chunks straddle pieces.
func TestServeAndGet(t *testing.T) {
	const pl = 32<<10 + 7*498 + 100
	tt := makeTorrent(t, "multi", pl, 300_000, 1, 777_777, 123_456)
	seeder := startAnacrolixSeeder(t, tt)
	s := newTestServer(t, newTestClient(t, seeder))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name      string
		file      string
		index     int
		useIndex  bool
		off, size int
	}{
		{name: "whole", size: len(tt.content)},
		{name: "by path", file: "part02.bin", off: 300_001, size: 777_777},
		{name: "by index", index: 3, useIndex: true, off: 300_001 + 777_777, size: 123_456},
		{name: "one byte", index: 1, useIndex: true, off: 300_000, size: 1},
	} {
		var out bytes.Buffer
		var last int64
		res, err := Get(ctx, GetConfig{Target: Magnet{InfoHash: tt.ih}, File: tc.file, FileIndex: tc.index, UseIndex: tc.useIndex,
			Open: direct(s), Workers: 3, SegmentBytes: 3 * pl, Progress: func(d, _ int64) { last = d }}, &out)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !bytes.Equal(out.Bytes(), tt.content[tc.off:tc.off+tc.size]) {
			t.Fatalf("%s: %d bytes differ from the %d expected", tc.name, out.Len(), tc.size)
		}
		if res.Length != int64(tc.size) || last != int64(tc.size) {
			t.Fatalf("%s: result %+v, progress %d", tc.name, res, last)
		}
	}
	if _, err := Get(ctx, GetConfig{Target: Magnet{InfoHash: tt.ih}, File: "nope", Open: direct(s)}, io.Discard); err == nil || !strings.Contains(err.Error(), "no file") {
		t.Fatalf("unknown file: %v", err)
	}
}

// A facilitator that changes a piece, or sends another torrent's info
// dictionary, is caught by the requester before anything bad is written.
func TestGetDetectsTampering(t *testing.T) {
	tt := makeTorrent(t, "tamper.bin", testPieceLen, 3<<20)
	other := makeTorrent(t, "other.bin", testPieceLen, 1<<20)
	otherInfo, err := VerifyInfo(other.ih, other.mi.InfoBytes)
	if err != nil {
		t.Fatal(err)
	}
	seeder := startAnacrolixSeeder(t, tt)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	s := newTestServer(t, &tamperFetcher{Fetcher: newTestClient(t, seeder), piece: 5})
	var out bytes.Buffer
	_, err = Get(ctx, GetConfig{Target: Magnet{InfoHash: tt.ih}, Open: direct(s), Workers: 1, SegmentBytes: 2 * testPieceLen}, &out)
	if !errors.Is(err, ErrPieceHash) {
		t.Fatalf("tampered piece: got %v, want ErrPieceHash", err)
	}
	if out.Len() > 4*testPieceLen || !bytes.Equal(out.Bytes(), tt.content[:out.Len()]) {
		t.Fatalf("%d bytes written, past the bad piece or wrong", out.Len())
	}

	s2 := newTestServer(t, &tamperFetcher{Fetcher: newTestClient(t, seeder), piece: -1, info: otherInfo})
	_, err = Get(ctx, GetConfig{Target: Magnet{InfoHash: tt.ih}, Open: direct(s2), Workers: 1}, io.Discard)
	if !errors.Is(err, ErrInfoHashMismatch) {
		t.Fatalf("other info: got %v, want ErrInfoHashMismatch", err)
	}
}

// Unknown content ends with DB_END and a clear error within the metadata
// timeout; a descriptor that never comes ends with ErrMetadataTimeout.
func TestGetUnavailable(t *testing.T) {
	cfg := testConfig()
	cfg.MetadataTimeout = 500 * time.Millisecond
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := newTestServer(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err = Get(ctx, GetConfig{Target: Magnet{InfoHash: InfoHash{1, 2, 3}}, Open: direct(s), Workers: 1}, io.Discard)
	if !errors.Is(err, ErrTorrentUnavailable) {
		t.Fatalf("got %v, want ErrTorrentUnavailable", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %v", d)
	}
	silent := func(context.Context, int) (Stream, error) { a, _ := pipe(); return a, nil }
	_, err = Get(ctx, GetConfig{Target: Magnet{InfoHash: InfoHash{4}}, Open: silent, Workers: 2, MetadataTimeout: 300 * time.Millisecond}, io.Discard)
	if !errors.Is(err, ErrMetadataTimeout) || !strings.Contains(err.Error(), "metadata") {
		t.Fatalf("got %v, want ErrMetadataTimeout", err)
	}
}
