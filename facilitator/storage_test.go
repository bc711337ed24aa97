package facilitator

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/anacrolix/torrent/metainfo"
)

func TestPieceStoreKeepsNothingBeyondCapacity(t *testing.T) {
	const pl = 1024
	s := newPieceStore(2 * pl)
	info := &metainfo.Info{PieceLength: pl, Length: 3*pl + 10, Pieces: make([]byte, 4*20)}
	ti, err := s.OpenTorrent(context.Background(), info, metainfo.Hash{})
	if err != nil {
		t.Fatal(err)
	}
	if c, capped := (*ti.Capacity)(); !capped || c != 2*pl {
		t.Fatalf("Capacity() = %d, %v", c, capped)
	}
	p := func(i int) storePiece { return ti.Piece(info.Piece(i)).(storePiece) }
	chunk := bytes.Repeat([]byte{7}, pl/2)
	for _, i := range []int{0, 1} {
		if _, err := p(i).WriteAt(chunk, 0); err != nil {
			t.Fatalf("write piece %d: %v", i, err)
		}
	}
	// A third piece would exceed the capacity: refused, nothing allocated.
	if _, err := p(2).WriteAt(chunk, 0); !errors.Is(err, errStoreFull) {
		t.Fatalf("third piece: %v, want errStoreFull", err)
	}
	if _, err := p(0).WriteAt(chunk, pl/2+1); err == nil {
		t.Fatal("write past the piece end accepted")
	}
	if c := p(0).Completion(); !c.Ok || c.Complete {
		t.Fatalf("unverified piece completion %+v", c)
	}
	if _, ok := s.take(0); ok {
		t.Fatal("take of an unverified piece")
	}
	if err := p(0).MarkComplete(); err != nil {
		t.Fatal(err)
	}
	if err := p(3).MarkComplete(); err == nil {
		t.Fatal("MarkComplete of a piece with no data accepted")
	}
	data, ok := s.take(0)
	if !ok || !bytes.Equal(data[:pl/2], chunk) || len(data) != pl {
		t.Fatalf("take(0) = %d bytes, %v", len(data), ok)
	}
	// Once released the piece is gone: incomplete, unreadable, and its room
	// goes to the next piece.
	s.release(0)
	if c := p(0).Completion(); c.Complete {
		t.Fatal("released piece still complete")
	}
	if _, err := p(0).ReadAt(make([]byte, 1), 0); err == nil {
		t.Fatal("released piece still readable")
	}
	if _, err := p(2).WriteAt(chunk, 0); err != nil {
		t.Fatalf("third piece after a release: %v", err)
	}
	// The short last piece fits too once another is released.
	s.release(1)
	if _, err := p(3).WriteAt(make([]byte, 10), 0); err != nil {
		t.Fatalf("last piece: %v", err)
	}
	held, maxHeld, refused := s.stats()
	if maxHeld != 2*pl || refused != 1 || held > 2*pl {
		t.Fatalf("stats held %d max %d refused %d", held, maxHeld, refused)
	}
	if err := ti.Close(); err != nil {
		t.Fatal(err)
	}
	if held, _, _ := s.stats(); held != 0 {
		t.Fatalf("%d bytes held after Close", held)
	}
	if _, err := newPieceStore(pl-1).OpenTorrent(context.Background(), info, metainfo.Hash{}); err == nil {
		t.Fatal("capacity below one piece accepted")
	}
}
