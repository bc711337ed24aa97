package ordb

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"runtime"
	"testing"
	"time"

	"veil/chunkstore/content"
	"veil/proto"
)

// A server that answers at most MaxChunks chunks per query (a smaller
// limit than the requester asks for) still delivers the whole content:
// Fetch asks again for the rest of each short answer instead of reporting
// success with chunks missing.
func TestFetchCompletesShortAnswers(t *testing.T) {
	pub, name, data := publish(t, 498*300+11)
	client, server := streamPair()
	errc := make(chan error, 1)
	go func() { errc <- (&Server{Store: pub, MaxChunks: 7}).Serve(server) }()
	t.Cleanup(func() { client.Close(); <-errc })
	dst := openStore(t, "r.db")
	if _, err := Fetch(context.Background(), client, name, dst, FetchConfig{ChunksPerQuery: 32, InFlight: 4}); err != nil {
		t.Fatal(err)
	}
	if n, err := dst.Check(name); err != nil || n != 301 {
		t.Fatalf("store holds %d verified chunks (%v), want 301", n, err)
	}
	if got := readAll(t, dst, name); !bytes.Equal(got, data) {
		t.Fatal("fetched content differs")
	}
}

// A server that answers every range query with the same valid range (one
// the requester did not ask for) is a protocol violation, not a completed
// fetch.
func TestFetchRejectsAnswerForAnotherRange(t *testing.T) {
	pub, name, _ := publish(t, 498*200)
	client, server := streamPair()
	go func() {
		defer server.Close()
		c := newMsgConn(server)
		srv := &Server{Store: pub}
		for {
			cmd, msg, err := c.recv()
			if err != nil || cmd != proto.RelayDBQuery {
				return
			}
			q, err := proto.ParseDBQuery(msg)
			if err != nil {
				return
			}
			if !q.WantsDescriptor() {
				q.Chunk, q.NbChunks = 0, 1 // always chunk 0
			}
			if err := srv.answer(c, new(serveBufs), q); err != nil {
				return
			}
		}
	}()
	dst := openStore(t, "r.db")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := Fetch(ctx, client, name, dst, FetchConfig{ChunksPerQuery: 10, InFlight: 2})
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("Fetch from a server answering the wrong range: err = %v, want ErrProtocol", err)
	}
}

// Fetching a content of the largest size a descriptor may announce costs
// memory in proportion to what is in flight, not to the announced size
// (listing all of its 2^30 chunks' ranges up front took ~1 GB).
func TestFetchHugeContentAllocatesLittle(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	d, err := content.NewDescriptor(priv, content.MaxChunks*content.ChunkSize, "x/y", content.Hash{1}, 1)
	if err != nil {
		t.Fatal(err)
	}
	name := content.HashNameOf(d)
	client, server := streamPair()
	go func() {
		// The descriptor, then nothing to serve. The server keeps reading
		// until Fetch closes the stream: closing first would race Fetch's
		// other queries in flight and fail them with a closed pipe.
		c := newMsgConn(server)
		if _, _, err := c.recv(); err != nil {
			return
		}
		c.send(d)
		if _, _, err := c.recv(); err != nil {
			return
		}
		c.send(proto.DBEnd{Reason: proto.DBEndUnavailable})
		for {
			if _, _, err := c.recv(); err != nil {
				return
			}
		}
	}()
	dst := openStore(t, "r.db")
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = Fetch(context.Background(), client, name, dst, FetchConfig{})
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 16<<20 {
		t.Fatalf("Fetch allocated %d MB before its first answer", got>>20)
	}
}

// The DB_END a requester sends when it is done ends Serve normally, not as
// a protocol violation.
func TestServeEndsCleanlyOnDBEnd(t *testing.T) {
	pub, name, _ := publish(t, 2000)
	client, server := streamPair()
	errc := make(chan error, 1)
	go func() { errc <- (&Server{Store: pub}).Serve(server) }()
	if _, err := Fetch(context.Background(), client, name, openStore(t, "r.db"), FetchConfig{}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Serve after the requester's DB_END: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
}

// A peer cannot make the ORDB buffer a large message: every message a
// server accepts (DB_QUERY, DB_END) fits one cell, so the first cell of a
// longer one (here announcing 1 MiB) ends the stream at once, before any
// of it is assembled. Otherwise each stream could hold 1 MiB.
func TestServerRefusesLongMessages(t *testing.T) {
	pub, _, _ := publish(t, 1000)
	client, server := streamPair()
	errc := make(chan error, 1)
	go func() { errc <- (&Server{Store: pub}).Serve(server) }()
	first := make([]byte, proto.RelayDataSize)
	binary.BigEndian.PutUint32(first, proto.MaxDBMessage)
	if err := client.WriteCell(proto.RelayDBQuery, first); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrProtocol) {
			t.Fatalf("Serve returned %v, want ErrProtocol", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve is still assembling a 1 MiB message")
	}
}
