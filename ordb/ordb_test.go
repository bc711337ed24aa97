package ordb

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"veil/chunkstore"
	"veil/proto"
)

// pipeEnd is one end of an in-memory CellStream pair: cells keep their
// command and boundaries, as on a circuit stream. The tap, if set, sees
// (and may change) every cell this end writes.
type pipeEnd struct {
	in, out   chan cell
	closeOnce *sync.Once
	done      chan struct{}
	tap       func(c *cell)
}

type cell struct {
	cmd  proto.RelayCommand
	data []byte
}

func streamPair() (*pipeEnd, *pipeEnd) {
	ab, ba := make(chan cell, 64), make(chan cell, 64)
	once, done := new(sync.Once), make(chan struct{})
	return &pipeEnd{in: ba, out: ab, closeOnce: once, done: done},
		&pipeEnd{in: ab, out: ba, closeOnce: once, done: done}
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
	c := cell{cmd, append([]byte(nil), data...)}
	if p.tap != nil {
		p.tap(&c)
	}
	select {
	case p.out <- c:
		return nil
	case <-p.done:
		return io.ErrClosedPipe
	}
}

func (p *pipeEnd) Close() error { p.closeOnce.Do(func() { close(p.done) }); return nil }

func openStore(t testing.TB, name string) *chunkstore.Store {
	t.Helper()
	cfg := chunkstore.DefaultConfig(filepath.Join(t.TempDir(), name))
	cfg.NoSync = true
	s, err := chunkstore.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// publish stores n random bytes in a fresh store and returns it, the name
// and the bytes.
func publish(t testing.TB, n int) (*chunkstore.Store, proto.HashName, []byte) {
	t.Helper()
	st := openStore(t, "publisher.db")
	data := make([]byte, n)
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	_, name, err := st.Publish(context.Background(), priv, "application/octet-stream", 1_700_000_000, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return st, name, data
}

func readAll(t *testing.T, st *chunkstore.Store, name proto.HashName) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := st.NewReader(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// serve runs a Server on one end of a pipe and returns the other end.
func serve(t *testing.T, st *chunkstore.Store, tap func(*cell)) *pipeEnd {
	t.Helper()
	client, server := streamPair()
	server.tap = tap
	errc := make(chan error, 1)
	go func() { errc <- (&Server{Store: st}).Serve(server) }()
	t.Cleanup(func() {
		client.Close()
		select {
		case <-errc:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after the stream closed")
		}
	})
	return client
}

func TestFetchWholeContent(t *testing.T) {
	for _, n := range []int{1, 497, 498, 499, 100_003, 498 * 64 * 3} {
		pub, name, data := publish(t, n)
		dst := openStore(t, "requester.db")
		var last [2]uint64
		d, err := Fetch(context.Background(), serve(t, pub, nil), name, dst, FetchConfig{
			ChunksPerQuery: 17, InFlight: 3,
			Progress: func(held, total uint64) { last = [2]uint64{held, total} },
		})
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if d.Size != uint64(n) {
			t.Errorf("descriptor size %d, want %d", d.Size, n)
		}
		if last[0] != last[1] || last[1] == 0 {
			t.Errorf("%d bytes: last progress %d/%d", n, last[0], last[1])
		}
		if got := readAll(t, dst, name); !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: fetched content differs", n)
		}
		if _, err := dst.Check(name); err != nil {
			t.Errorf("stored content fails its check: %v", err)
		}
	}
}

func TestFetchUnknownIsUnavailable(t *testing.T) {
	pub, _, _ := publish(t, 1000)
	_, err := Fetch(context.Background(), serve(t, pub, nil), proto.HashName{1, 2, 3}, openStore(t, "r.db"), FetchConfig{})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
}

// A bit flipped in any DB_DATA is caught before storage: Fetch fails and
// the requester's store holds no chunk of the tampered range.
func TestFetchRejectsTamperedData(t *testing.T) {
	pub, name, _ := publish(t, 40_000)
	dst := openStore(t, "r.db")
	var flipped bool
	tap := func(c *cell) {
		if c.cmd == proto.RelayDBData && !flipped {
			c.data[len(c.data)/2] ^= 0x10
			flipped = true
		}
	}
	_, err := Fetch(context.Background(), serve(t, pub, tap), name, dst, FetchConfig{InFlight: 1})
	if err == nil || !flipped {
		t.Fatalf("Fetch of tampered content: err = %v (flipped %v)", err, flipped)
	}
	if err := dst.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	have, err := dst.Have(name)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range have {
		if w != 0 {
			t.Fatalf("store holds chunks after the first range was tampered: %x", have)
		}
	}
}

// A server that sends another content's descriptor is caught.
func TestFetchRejectsWrongDescriptor(t *testing.T) {
	pub, _, _ := publish(t, 5000)
	_, otherName, _ := publish(t, 6000)
	names, _ := pub.Names()
	_, err := Fetch(context.Background(), serve(t, pub, nil), otherName, openStore(t, "r.db"), FetchConfig{})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("fetching a name the server lacks: %v", err)
	}
	// Now a lying server: it answers every descriptor query with its own.
	client, server := streamPair()
	go func() {
		c := newMsgConn(server)
		if _, _, err := c.recv(); err != nil {
			return
		}
		d, _ := pub.Descriptor(names[0])
		c.send(d)
	}()
	_, err = Fetch(context.Background(), client, otherName, openStore(t, "r2.db"), FetchConfig{})
	if !errors.Is(err, ErrMismatch) {
		t.Fatalf("err = %v, want ErrMismatch", err)
	}
}

// An interrupted fetch resumes: the second run asks only for what is missing.
func TestFetchResumes(t *testing.T) {
	pub, name, data := publish(t, 498*200)
	dst := openStore(t, "r.db")
	ctx, cancel := context.WithCancel(context.Background())
	_, err := Fetch(ctx, serve(t, pub, nil), name, dst, FetchConfig{
		ChunksPerQuery: 10, InFlight: 1,
		Progress: func(held, total uint64) {
			if held >= 100 {
				cancel()
			}
		},
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("first fetch: err = %v, want context.Canceled", err)
	}
	dst.Flush(context.Background())
	// Count the queries the requester sends on the second run.
	var queries int
	tapped := &countingStream{CellStream: serve(t, pub, nil), queries: &queries}
	if _, err := Fetch(context.Background(), tapped, name, dst, FetchConfig{ChunksPerQuery: 10, InFlight: 4}); err != nil {
		t.Fatal(err)
	}
	// 1 descriptor query + at most 10 range queries for <= 100 missing chunks.
	if queries > 11 {
		t.Errorf("resumed fetch sent %d queries, want <= 11", queries)
	}
	if got := readAll(t, dst, name); !bytes.Equal(got, data) {
		t.Fatal("resumed content differs")
	}
}

type countingStream struct {
	CellStream
	queries *int
}

func (s *countingStream) WriteCell(cmd proto.RelayCommand, data []byte) error {
	if cmd == proto.RelayDBQuery {
		*s.queries++
	}
	return s.CellStream.WriteCell(cmd, data)
}

// A query whose counter reached 5 gets DB_END (the Peersm specification's
// loop breaker).
func TestServerEndsAtCounterFive(t *testing.T) {
	pub, name, _ := publish(t, 1000)
	c := newMsgConn(serve(t, pub, nil))
	for counter, want := range map[uint8]proto.RelayCommand{4: proto.RelayDBConnected, 5: proto.RelayDBEnd} {
		if err := c.send(proto.DBQuery{HashName: name, Counter: counter}); err != nil {
			t.Fatal(err)
		}
		cmd, _, err := c.recv()
		if err != nil || cmd != want {
			t.Errorf("counter %d: got %v, %v; want %v", counter, cmd, err, want)
		}
	}
}

// A peer that breaks the framing gets its stream ended with an error.
func TestServerRejectsBadFraming(t *testing.T) {
	pub, _, _ := publish(t, 1000)
	client, server := streamPair()
	errc := make(chan error, 1)
	go func() { errc <- (&Server{Store: pub}).Serve(server) }()
	client.WriteCell(proto.RelayDBMore, []byte("no message started"))
	select {
	case err := <-errc:
		if !errors.Is(err, ErrProtocol) {
			t.Fatalf("Serve returned %v, want ErrProtocol", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not end on a framing error")
	}
}
