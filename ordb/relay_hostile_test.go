package ordb

import (
	"bytes"
	"errors"
	"io"
	"sync/atomic"
	"testing"

	"veil/circuits"
	"veil/proto"
)

// rawMsg is a DB_* message of any bytes, for sending what a hostile peer
// would.
type rawMsg struct {
	cmd proto.RelayCommand
	b   []byte
}

func (m rawMsg) Command() proto.RelayCommand { return m.cmd }
func (m rawMsg) Len() int                    { return len(m.b) }
func (m rawMsg) Append(b []byte) []byte      { return append(b, m.b...) }

// expectEnd reads one message and wants DB_END with reason.
func expectEnd(t *testing.T, mc *msgConn, reason proto.DBEndReason) {
	t.Helper()
	cmd, msg, err := mc.recv()
	if err != nil || cmd != proto.RelayDBEnd {
		t.Fatalf("got %v, %v; want DB_END", cmd, err)
	}
	if e, _ := proto.ParseDBEnd(msg); e.Reason != reason {
		t.Fatalf("DB_END %v, want %v", e.Reason, reason)
	}
}

// expectClosed wants the ORDB to have closed the stream.
func expectClosed(t *testing.T, mc *msgConn) {
	t.Helper()
	if cmd, _, err := mc.recv(); err == nil {
		t.Fatalf("got %v, want the stream closed", cmd)
	}
}

// Hostile DB_* inputs to a Relay get DB_END or a closed stream; the Relay
// goes on serving, and a holder that advertised what it lacks poisons
// nothing: the content still comes, whole, from the honest holder.
func TestRelayHostileInputs(t *testing.T) {
	net, infra, ctx := smallNet(t, 3, nil)
	x := infra[2]
	b, r, h := net.addPeer("B"), net.addPeer("R"), net.addPeer("H")
	b.circs.add(net.build(b, infra[0], x))
	name, data := publishOn(t, ctx, b, 498*64*4)
	if _, err := b.peer.Advertise(ctx, name); !isTooFew(err) {
		t.Fatal(err)
	}
	rc := net.build(r, infra[1], x)
	open := func() *msgConn {
		s, err := rc.OpenStream(ctx, ORDBDest)
		if err != nil {
			t.Fatal(err)
		}
		return newMsgConn(s)
	}
	valid := proto.DBQuery{HashName: name, RequestID: 1}.Append(nil)
	patch := func(i int, v byte) []byte { b := clone(valid); b[i] = v; return b }

	t.Run("unknown hash_name", func(t *testing.T) {
		mc := open()
		mc.send(proto.DBQuery{HashName: proto.HashName{0xee}, RequestID: 2})
		expectEnd(t, mc, proto.DBEndUnavailable)
		mc.send(proto.DBQuery{HashName: proto.HashName{0xee}, Chunk: 5, NbChunks: 3, RequestID: 3})
		expectEnd(t, mc, proto.DBEndUnavailable)
	})
	t.Run("counter at MaxCounter", func(t *testing.T) {
		mc := open()
		mc.send(proto.DBQuery{HashName: name, Counter: proto.MaxCounter, RequestID: 4})
		expectEnd(t, mc, proto.DBEndUnavailable)
	})
	for _, tc := range []struct {
		name string
		msg  rawMsg
	}{
		{"counter out of range", rawMsg{proto.RelayDBQuery, patch(len(valid)-9, proto.MaxCounter+3)}},
		{"hash_name length 19", rawMsg{proto.RelayDBQuery, patch(0, 19)}},
		{"truncated query", rawMsg{proto.RelayDBQuery, valid[:len(valid)-1]}},
		{"trailing bytes", rawMsg{proto.RelayDBQuery, append(clone(valid), 0)}},
		{"data sent to an ORDB", rawMsg{proto.RelayDBData, make([]byte, 12+498)}},
		{"bad DB_INFO P", rawMsg{proto.RelayDBInfo, append(append([]byte{20}, name[:]...), 9)}},
		{"oversized message", rawMsg{proto.RelayDBInfo, make([]byte, 2000)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mc := open()
			// A message of several cells may find the stream closed
			// before its last cell left: the ORDB judged the first.
			if err := mc.send(tc.msg); err != nil && !errors.Is(err, io.ErrClosedPipe) {
				t.Fatal(err)
			}
			expectClosed(t, mc)
		})
	}
	t.Run("DB_INFO and DB_ANNOUNCE on one stream", func(t *testing.T) {
		mc := open()
		mc.send(proto.DBInfo{HashName: proto.HashName{0xab}, P: 3})
		mc.send(proto.DBAnnounce{HashName: proto.HashName{0xac}})
		expectClosed(t, mc)
	})
	t.Run("chunks past the end", func(t *testing.T) {
		mc := open()
		mc.send(proto.DBQuery{HashName: name, RequestID: 10})
		if cmd, _, err := mc.recv(); err != nil || cmd != proto.RelayDBConnected {
			t.Fatalf("descriptor: %v %v", cmd, err)
		}
		before := b.peer.Stats().Queries
		mc.send(proto.DBQuery{HashName: name, Chunk: 1 << 30, NbChunks: 4, RequestID: 11})
		expectEnd(t, mc, proto.DBEndUnavailable)
		if b.peer.Stats().Queries != before {
			t.Fatal("a query past the end reached the holder")
		}
	})

	// H advertises the content without having it and answers its queries
	// with junk; the requester still gets every byte through x.
	var junk atomic.Int64
	h.sw.Handle(PeerDest, func(s *circuits.Stream) {
		mc := newMsgConn(s)
		defer s.Close()
		for {
			cmd, msg, err := mc.recv()
			if err != nil || cmd != proto.RelayDBQuery {
				return
			}
			q, _ := proto.ParseDBQuery(msg)
			junk.Add(1)
			if q.WantsDescriptor() {
				mc.send(proto.DBConnected{Size: 5, Type: "x", PublicKey: make([]byte, 32), Root: make([]byte, 32), Signature: make([]byte, 64)})
				continue
			}
			mc.send(proto.DBProof{Chunk: q.Chunk, NbChunks: 1})
			mc.send(proto.DBData{Chunk: q.Chunk + 1, Data: make([]byte, 498)})
		}
	})
	hs, err := net.build(h, infra[0], x).OpenStream(ctx, ORDBDest)
	if err != nil {
		t.Fatal(err)
	}
	newMsgConn(hs).send(proto.DBInfo{HashName: name, P: proto.MaxP})
	waitFor(t, ctx, "H's reference", func() bool { f, _ := x.relay.Refs(name); return len(f) == 2 })
	fetchVia(t, ctx, r.store, name, opener(rc), opener(rc), opener(rc))
	if got := readAll(t, r.store, name); !bytes.Equal(got, data) {
		t.Fatal("copy differs")
	}
	files, _ := x.relay.Refs(name)
	honest := false
	for _, f := range files {
		honest = honest || f.Strikes == 0
	}
	if !honest {
		t.Fatalf("the honest holder lost its place: %+v", files)
	}
	t.Logf("H was asked %d times; lists: %+v; stats %+v", junk.Load(), files, x.relay.Stats())
}

func isTooFew(err error) bool {
	return err != nil && bytes.Contains([]byte(err.Error()), []byte("fewer than 6"))
}

// On the last hop of its own circuits a peer answers only for names it
// advertised there: an ORDB probing another name the peer holds gets DB_END
// UNAVAILABLE.
func TestPeerAnswersOnlyAdvertisedNames(t *testing.T) {
	net, infra, ctx := smallNet(t, 1, nil)
	z := net.addNode("Z", proto.FlagRelay|proto.FlagORDB, true) // a hostile ORDB
	b := net.addPeer("B")
	got := make(chan InStream, 1)
	z.sw.Handle(ORDBDest, func(s *circuits.Stream) {
		got <- FromCircuitStream(s)
		buf := make([]byte, proto.RelayDataSize)
		for {
			if _, _, err := s.ReadCell(buf); err != nil {
				return
			}
		}
	})
	b.circs.add(net.build(b, infra[0], z))
	advertised, _ := publishOn(t, ctx, b, 498*10)
	other, _ := publishOn(t, ctx, b, 498*11)
	if _, err := b.peer.Advertise(ctx, advertised); !isTooFew(err) {
		t.Fatal(err)
	}
	in := <-got
	back, err := in.OpenBack(ctx, PeerDest)
	if err != nil {
		t.Fatal(err)
	}
	mc := newMsgConn(back)
	mc.send(proto.DBQuery{HashName: other, RequestID: 1})
	expectEnd(t, mc, proto.DBEndUnavailable)
	mc.send(proto.DBQuery{HashName: other, Chunk: 0, NbChunks: 2, RequestID: 2})
	expectEnd(t, mc, proto.DBEndUnavailable)
	mc.send(proto.DBQuery{HashName: advertised, RequestID: 3})
	if cmd, _, err := mc.recv(); err != nil || cmd != proto.RelayDBConnected {
		t.Fatalf("advertised name: %v %v", cmd, err)
	}
	if st := b.peer.Stats(); st.Refused != 2 || st.Served != 1 {
		t.Fatalf("peer stats %+v", st)
	}
}
