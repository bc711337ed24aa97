package link

import (
	"bytes"
	"errors"
	"net"
	"testing"
	"testing/synctest"

	"veil/proto"
)

// recConn records the writes that reach the socket.
type recConn struct {
	net.Conn
	writes [][]byte
	err    error
}

func (c *recConn) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

// Once batching, the TLS records of a flush reach the socket in one write,
// in order; a record too big for the buffer goes straight through after
// what was gathered; and a failed socket write is the flush's error.
func TestDeadlineConnGathersWrites(t *testing.T) {
	rec := &recConn{}
	c := &deadlineConn{Conn: rec}
	if _, err := c.Write([]byte("handshake")); err != nil || len(rec.writes) != 1 {
		t.Fatalf("before batching: %v, %d writes", err, len(rec.writes))
	}
	rec.writes = nil

	const size = 64 << 10
	c.startBatching(size)
	var want []byte
	for i := range 4 { // a full write buffer: four 16 KiB records
		rec := bytes.Repeat([]byte{byte(i)}, 16384+22)
		if n, err := c.Write(rec); err != nil || n != len(rec) {
			t.Fatalf("record %d: %d, %v", i, n, err)
		}
		want = append(want, rec...)
	}
	if len(rec.writes) != 0 {
		t.Fatalf("%d socket writes before flush", len(rec.writes))
	}
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}
	if len(rec.writes) != 1 || !bytes.Equal(rec.writes[0], want) {
		t.Fatalf("flush made %d socket writes, want 1 with the four records", len(rec.writes))
	}
	if err := c.flush(); err != nil || len(rec.writes) != 1 {
		t.Fatalf("empty flush: %v, %d writes", err, len(rec.writes))
	}

	rec.writes = nil
	small, big := []byte("small"), make([]byte, 2*size)
	c.Write(small)
	if _, err := c.Write(big); err != nil {
		t.Fatal(err)
	}
	if len(rec.writes) != 2 || !bytes.Equal(rec.writes[0], small) || len(rec.writes[1]) != len(big) {
		t.Fatalf("oversized write: %d socket writes", len(rec.writes))
	}

	boom := errors.New("boom")
	rec.err = boom
	c.Write(small)
	if err := c.flush(); !errors.Is(err, boom) {
		t.Fatalf("flush after a failed socket write: %v", err)
	}
}

// With a write buffer of one cell, var cells larger than the buffer go
// through TLS directly; everything still arrives, in order.
func TestLinkTinyWriteBuffer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.WriteBufferSize = proto.CellSize
		a := newPipeNode(t, cfg)
		peer := rawPipePeer(t, a)
		got, _ := readAll(peer)
		l := a.onlyLink(t)
		var want []proto.Command
		for i := range 20 {
			if err := l.SendCell(makeCell(uint32(i), proto.CmdRelay, 0)); err != nil {
				t.Fatal(err)
			}
			want = append(want, proto.CmdRelay)
			if i%3 == 0 {
				v := proto.VarCell{CircID: uint32(i), Command: proto.CmdDHT, Payload: make([]byte, proto.MaxVarPayload)}
				if err := l.SendVar(v); err != nil {
					t.Fatal(err)
				}
				want = append(want, proto.CmdDHT)
			}
		}
		synctest.Wait()
		for i, cmd := range want {
			select {
			case c := <-got:
				if c.cmd != cmd {
					t.Fatalf("cell %d: %v, want %v", i, c.cmd, cmd)
				}
			default:
				t.Fatalf("%d of %d cells arrived", i, len(want))
			}
		}
		peer.Close()
	})
}
