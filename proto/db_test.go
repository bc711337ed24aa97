package proto

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// fill returns n bytes b, b+1, b+2, ...
func fill(n int, b byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = b + byte(i)
	}
	return p
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hashName(b byte) HashName { return HashName(bytes.Repeat([]byte{b}, IDSize)) }
func nodeID(b byte) NodeID     { return NodeID(bytes.Repeat([]byte{b}, IDSize)) }

func sampleDescriptor() DBConnected {
	return DBConnected{
		Size:      123456789,
		Type:      "video/mp4",
		PublicKey: fill(IdentityKeySize, 0x40),
		Flags:     FlagLive,
		Root:      fill(RootSize, 0x80),
		Created:   1700000000,
		Signature: fill(SignatureSize, 0xa0),
	}
}

func samplePeer4() DBPeer {
	return DBPeer{ID: nodeID(1), Addr: netip.MustParseAddrPort("10.1.2.3:7700"), OnionKey: fill(OnionKeySize, 0x30)}
}

func samplePeer6() DBPeer {
	return DBPeer{ID: nodeID(2), Addr: netip.MustParseAddrPort("[2001:db8::1]:65535"), OnionKey: fill(OnionKeySize, 0x50)}
}

func samplePeerNoAddr() DBPeer {
	return DBPeer{ID: nodeID(3), OnionKey: fill(OnionKeySize, 0x70)}
}

// sampleDBMessages returns valid messages of every DB_* kind, covering the
// edges of each field.
func sampleDBMessages() []DBMessage {
	d := sampleDescriptor()
	dNoRoot := d
	dNoRoot.Root, dNoRoot.Flags, dNoRoot.Size, dNoRoot.Type = nil, 0, 0, ""
	mapped := DBPeer{ID: nodeID(4), Addr: netip.AddrPortFrom(netip.AddrFrom16(netip.MustParseAddr("1.2.3.4").As16()), 1), OnionKey: fill(OnionKeySize, 9)}
	var sixteen []DBPeer
	for i := range MaxFoundPeers {
		p := samplePeer6()
		p.ID = nodeID(byte(i))
		sixteen = append(sixteen, p)
	}
	return []DBMessage{
		DBQuery{HashName: hashName(0x11), RequestID: 1},
		DBQuery{HashName: hashName(0x11), Chunk: 1, NbChunks: 0, Counter: 0},
		DBQuery{HashName: hashName(0x22), Chunk: 0x0102, NbChunks: 5, Counter: 3, RequestID: 0x0807060504030201},
		DBQuery{HashName: hashName(0x33), Chunk: 0xffffffff, NbChunks: 0xffff, Counter: MaxCounter, RequestID: ^uint64(0)},
		DBQuery{HashName: hashName(0x33), Chunk: 0x00ff0000, NbChunks: 1, Counter: 1},
		DBQuery{HashName: hashName(0x44), Chunk: 7, NbChunks: 3, RequestID: 9, Known: 12345},
		d,
		dNoRoot,
		DBData{Chunk: 7, Timestamp: 1700000000, Tag: [4]byte{1, 2, 3, 4}, Data: fill(1, 0)},
		DBData{Chunk: 0, Data: fill(ChunkSize, 0)},
		DBData{Chunk: 100, Timestamp: 5, Data: fill(32*ChunkSize, 3)},
		DBData{Chunk: 0xffffffff - 1, Data: fill(ChunkSize+1, 3)},
		DBData{Chunk: 1, Data: fill(MaxDBMessage-DBDataHeaderSize, 1)},
		DBProof{Chunk: 0, NbChunks: 1},
		DBProof{Chunk: 3, NbChunks: 32, Proof: fill(5*32, 0x10)},
		DBProof{Chunk: 0xffffffff, NbChunks: 1, Proof: fill(MaxProofSize, 1)},
		DBInfo{HashName: hashName(0x44), P: 0},
		DBInfo{HashName: hashName(0x44), P: MaxP, Facilitator: true},
		DBFindPeer{samplePeer4()},
		DBFindPeer{samplePeer6()},
		DBFindPeer{samplePeerNoAddr()},
		DBFindPeer{mapped},
		DBFoundPeer{Peers: []DBPeer{samplePeer4()}},
		DBFoundPeer{Peers: []DBPeer{samplePeer4(), samplePeer6(), samplePeerNoAddr(), mapped}},
		DBFoundPeer{Peers: sixteen},
		DBEnd{Reason: DBEndUnavailable},
		DBEnd{Reason: DBEndFinished},
		DBEnd{Reason: DBEndDestroyed},
		DBAnnounce{HashName: hashName(0x55)},
		DBAnnounce{HashName: hashName(0x55), Size: 20 << 20, Type: "video/mp4", Live: true},
		DBAnnounce{HashName: hashName(0x56), Size: ^uint64(0), Type: string(fill(MaxMIMEType, 'a'))},
		DBStreamInfo{HashName: hashName(0x66), First: 3, Last: 3},
		DBStreamInfo{HashName: hashName(0x66), First: 0, Last: ^uint64(0), Type: "video/webm"},
		DBLiveStart{},
		DBLiveStart{Chunk: 0x0102030405060708},
		DBConnected{Size: 50 << 20, Type: "application/octet-stream", Flags: FlagTorrent, Info: []byte("d4:name1:ae")},
	}
}

// normalize makes empty and nil byte slices compare equal.
func normalize(m DBMessage) DBMessage {
	switch v := m.(type) {
	case DBConnected:
		if len(v.Root) == 0 {
			v.Root = nil
		}
		if len(v.PublicKey) == 0 {
			v.PublicKey = nil
		}
		return v
	case DBProof:
		if len(v.Proof) == 0 {
			v.Proof = nil
		}
		return v
	}
	return m
}

func TestDBRoundTrip(t *testing.T) {
	for i, m := range sampleDBMessages() {
		b := m.Append(nil)
		if len(b) != m.Len() {
			t.Errorf("%d %v: Len %d, encoded %d bytes", i, m.Command(), m.Len(), len(b))
		}
		got, err := ParseDB(m.Command(), b)
		if err != nil {
			t.Errorf("%d %v: %v", i, m.Command(), err)
			continue
		}
		if !reflect.DeepEqual(normalize(got), normalize(m)) {
			t.Errorf("%d %v: parsed %+v, want %+v", i, m.Command(), got, m)
		}
		if got.Command() != m.Command() {
			t.Errorf("%d: command %v, want %v", i, got.Command(), m.Command())
		}
		if b2 := got.Append([]byte{0xee}); !bytes.Equal(b2[1:], b) || b2[0] != 0xee {
			t.Errorf("%d %v: re-encoding differs or clobbers the prefix", i, m.Command())
		}
	}
}

// TestDBExactBytes pins each layout to hand-written bytes, as the Peersm specification gives them.
func TestDBExactBytes(t *testing.T) {
	h := strings.Repeat("11", 20)
	k := hex.EncodeToString(fill(32, 0x30))
	tests := []struct {
		m    DBMessage
		want string
	}{
		{DBQuery{HashName: hashName(0x11), Chunk: 0x0102, NbChunks: 5, Counter: 3, RequestID: 0x0807060504030201},
			"14" + h + "02 0102  0005 03 0807060504030201"},
		{DBQuery{HashName: hashName(0x11)}, "14" + h + "00 0000 00 0000000000000000"},
		{DBQuery{HashName: hashName(0x11), Chunk: 0x01000000, NbChunks: 1}, "14" + h + "04 01000000 0001 00 0000000000000000"},
		{DBData{Chunk: 0x01020304, Timestamp: 0x0a0b0c0d, Tag: [4]byte{0xde, 0xad, 0xbe, 0xef}, Data: []byte{9, 8, 7}},
			"01020304 0a0b0c0d deadbeef 090807"},
		{DBProof{Chunk: 2, NbChunks: 3, Proof: []byte{0xaa, 0xbb}}, "00000002 00000003 0002 aabb"},
		{DBInfo{HashName: hashName(0x11), P: 2}, "14" + h + "02"},
		{DBInfo{HashName: hashName(0x11), P: 3, Facilitator: true}, "14" + h + "03 01"},
		{DBFindPeer{samplePeer4()}, "14" + strings.Repeat("01", 20) + "04 0a010203 02 1e14 20" + k},
		{DBFindPeer{DBPeer{ID: nodeID(1), OnionKey: fill(32, 0x30)}}, "14" + strings.Repeat("01", 20) + "00 00 20" + k},
		{DBFindPeer{DBPeer{ID: nodeID(1), Addr: netip.MustParseAddrPort("[::1]:1"), OnionKey: fill(32, 0x30)}},
			"14" + strings.Repeat("01", 20) + "10 00000000000000000000000000000001 02 0001 20" + k},
		{DBEnd{Reason: DBEndDestroyed}, "02"},
		{DBConnected{Size: 0x0100, Type: "a/b", PublicKey: fill(32, 0x30), Flags: 1, Created: 5, Signature: fill(64, 0)},
			"02 0100 03 612f62 20" + k + "01 00 0000000000000005 40" + hex.EncodeToString(fill(64, 0))},
	}
	for _, tt := range tests {
		want := unhex(t, tt.want)
		if got := tt.m.Append(nil); !bytes.Equal(got, want) {
			t.Errorf("%v: encoded\n%x\nwant\n%x", tt.m.Command(), got, want)
		}
		if _, err := ParseDB(tt.m.Command(), want); err != nil {
			t.Errorf("%v: %v", tt.m.Command(), err)
		}
	}
}

// mutate returns a copy of b with b[i] = v.
func mutate(b []byte, i int, v byte) []byte {
	c := bytes.Clone(b)
	c[i] = v
	return c
}

func TestDBBadFields(t *testing.T) {
	q := DBQuery{HashName: hashName(0x11), Chunk: 0x0102, NbChunks: 5, Counter: 3}.Append(nil)
	info := DBInfo{HashName: hashName(0x11), P: 1, Facilitator: true}.Append(nil)
	peer := samplePeer4().Append(nil)
	proof := DBProof{Chunk: 2, NbChunks: 3, Proof: []byte{1, 2}}.Append(nil)
	desc := sampleDescriptor().Append(nil)
	tor := DBConnected{Size: 5, Flags: FlagTorrent, Info: []byte("de")}.Append(nil) // 01 05 00 00 80 00000002 6465
	tests := []struct {
		name string
		cmd  RelayCommand
		b    []byte
		want error
	}{
		{"query hash_name length 19", RelayDBQuery, mutate(q, 0, 19), ErrBadLength},
		{"query hash_name length 21", RelayDBQuery, mutate(q, 0, 21), ErrBadLength},
		{"query chunk nb length 5", RelayDBQuery, append(append(bytes.Clone(q[:21]), 5, 0, 0, 0, 0, 1), q[24:]...), ErrTooLong},
		{"query chunk nb not minimal", RelayDBQuery, append(append(bytes.Clone(q[:21]), 3, 0), q[22:]...), ErrBadValue},
		{"query chunk nb one zero byte", RelayDBQuery, append(append(bytes.Clone(q[:21]), 1, 0), q[24:]...), ErrBadValue},
		{"query counter 6", RelayDBQuery, mutate(q, 26, 6), ErrBadValue},
		{"query counter 255", RelayDBQuery, mutate(q, 26, 255), ErrBadValue},
		{"data empty", RelayDBData, make([]byte, DBDataHeaderSize), ErrTruncated},
		{"data over MaxDBMessage", RelayDBData, make([]byte, MaxDBMessage+1), ErrTooLong},
		{"data chunk overflow", RelayDBData, append(unhex(t, "ffffffff 00000000 00000000"), fill(ChunkSize+1, 0)...), ErrBadValue},
		{"proof zero chunks", RelayDBProof, mutate(proof, 7, 0), ErrBadValue},
		{"proof overflow", RelayDBProof, unhex(t, "ffffffff 00000002 0000"), ErrBadValue},
		{"proof too long", RelayDBProof, append(binary.BigEndian.AppendUint16(unhex(t, "00000000 00000001"), MaxProofSize+1), make([]byte, MaxProofSize+1)...), ErrTooLong},
		{"proof length over data", RelayDBProof, mutate(proof, 9, 3), ErrTruncated},
		{"proof length under data", RelayDBProof, mutate(proof, 9, 1), ErrTrailing},
		{"info hash_name length 0", RelayDBInfo, mutate(info, 0, 0), ErrBadLength},
		{"info P 4", RelayDBInfo, mutate(info, 21, 4), ErrBadValue},
		{"info F 0", RelayDBInfo, mutate(info, 22, 0), ErrBadValue},
		{"info F 2", RelayDBInfo, mutate(info, 22, 2), ErrBadValue},
		{"peer ID length 32", RelayDBFindPeer, mutate(peer, 0, 32), ErrBadLength},
		{"peer IP length 5", RelayDBFindPeer, mutate(peer, 21, 5), ErrBadLength},
		{"peer IP length 16 short", RelayDBFindPeer, mutate(peer, 21, 16), ErrBadLength},
		{"peer port length 1", RelayDBFindPeer, mutate(peer, 26, 1), ErrBadLength},
		{"peer port without IP", RelayDBFindPeer, append(append(bytes.Clone(peer[:21]), 0), peer[26:]...), ErrBadLength},
		{"peer IP without port", RelayDBFindPeer, append(append(bytes.Clone(peer[:26]), 0), peer[29:]...), ErrBadLength},
		{"peer key length 31", RelayDBFindPeer, mutate(peer, 29, 31), ErrBadLength},
		{"peer key length 33", RelayDBFindPeer, append(mutate(peer, 29, 33), 0), ErrBadLength},
		{"found peer empty", RelayDBFoundPeer, nil, ErrTruncated},
		{"found peer 17", RelayDBFoundPeer, bytes.Repeat(peer, MaxFoundPeers+1), ErrTooLong},
		{"found peer bad second", RelayDBFoundPeer, append(bytes.Clone(peer), mutate(peer, 0, 1)...), ErrBadLength},
		{"end reason 3", RelayDBEnd, []byte{3}, ErrBadValue},
		{"end reason 255", RelayDBEnd, []byte{255}, ErrBadValue},
		{"end empty", RelayDBEnd, nil, ErrTruncated},
		{"connected size not minimal", RelayDBConnected, append([]byte{4, 0, 0x07, 0x5b, 0xcd, 0x15}, desc[5:]...), ErrBadValue},
		{"connected size length 9", RelayDBConnected, append([]byte{9}, desc[1:]...), ErrTooLong},
		{"connected key length 31", RelayDBConnected, append(mutate(desc, 1+4+1+9, 31)[:1+4+1+9+1+31], desc[1+4+1+9+1+32:]...), ErrBadLength},
		{"connected unknown flag", RelayDBConnected, mutate(desc, 1+4+1+9+1+32, 2), ErrBadValue},
		{"connected root length 16", RelayDBConnected, append(mutate(desc, 1+4+1+9+1+32+1, 16)[:1+4+1+9+1+32+1+1+16], desc[1+4+1+9+1+32+1+1+32:]...), ErrBadLength},
		{"connected MIME control byte", RelayDBConnected, mutate(desc, 1+4+1, '\n'), ErrBadValue},
		{"torrent info length 0", RelayDBConnected, append(bytes.Clone(tor[:5]), 0, 0, 0, 0), ErrBadLength},
		{"torrent info too long", RelayDBConnected, append(bytes.Clone(tor[:5]), 0x7f, 0, 0, 0, 'd', 'e'), ErrBadLength},
		{"torrent info short", RelayDBConnected, mutate(tor, 8, 3), ErrTruncated},
		{"torrent and live", RelayDBConnected, mutate(tor, 4, FlagTorrent|FlagLive), ErrBadValue},
		{"torrent trailing", RelayDBConnected, append(bytes.Clone(tor), 0), ErrTrailing},
		{"connected signature length 63", RelayDBConnected, mutate(desc, len(desc)-65, 63), ErrTrailing},
		{"connected signature length 65", RelayDBConnected, append(mutate(desc, len(desc)-65, 65), 0), ErrTooLong},
		{"unknown command DATA", RelayData, []byte{0}, ErrUnknownCommand},
		{"unknown command DB_MORE", RelayDBMore, []byte{0}, ErrUnknownCommand},
		{"unknown command 200", RelayCommand(200), []byte{0}, ErrUnknownCommand},
	}
	for _, tt := range tests {
		m, err := ParseDB(tt.cmd, tt.b)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: got (%v, %v), want error %v", tt.name, m, err, tt.want)
		}
		if err != nil && m != nil {
			t.Errorf("%s: message %+v alongside error", tt.name, m)
		}
	}
}

func TestDBTrailing(t *testing.T) {
	for _, m := range sampleDBMessages() {
		b := m.Append(nil)
		for _, extra := range [][]byte{{0}, {1}, {0xff, 0xff}} {
			got, err := ParseDB(m.Command(), append(bytes.Clone(b), extra...))
			switch m.(type) {
			case DBData:
				// Data runs to the end of the message: extra bytes are more data
				// (the framing's length delimits the message), or too many.
				if err == nil && got.Len() != len(b)+len(extra) {
					t.Errorf("%v: trailing bytes lost", m.Command())
				}
				continue
			case DBInfo:
				if !m.(DBInfo).Facilitator && len(extra) == 1 && extra[0] == 1 {
					continue // the optional F byte
				}
			case DBFoundPeer:
				// A second record can't be one or two bytes long.
			}
			if err == nil {
				t.Errorf("%v + %x: no error", m.Command(), extra)
			}
		}
	}
}

// TestDBTruncated feeds every proper prefix of each valid message. Each must
// fail, except where the Peersm layout is delimited only by the message's
// end (DB_DATA's data, DB_INFO's optional F, DB_QUERY's optional known
// length, DB_FOUND_PEER's list): there a
// prefix may parse, but only as exactly the bytes it holds. The framing
// (Assembler) carries the total length, so those truncations are caught
// there; see TestAssemblerTruncated.
func TestDBTruncated(t *testing.T) {
	for _, m := range sampleDBMessages() {
		b := m.Append(nil)
		step := 1
		if len(b) > 4096 {
			step = 97 // keep the big messages fast; edges are covered below
		}
		for i := 0; i < len(b); i += step {
			checkPrefix(t, m, b, i)
		}
		for i := max(0, len(b)-40); i < len(b); i++ {
			checkPrefix(t, m, b, i)
		}
	}
}

func checkPrefix(t *testing.T, m DBMessage, b []byte, i int) {
	t.Helper()
	got, err := ParseDB(m.Command(), b[:i])
	if err != nil {
		if i < 1 && !errors.Is(err, ErrTruncated) {
			t.Errorf("%v: empty: %v, want ErrTruncated", m.Command(), err)
		}
		return
	}
	ok := false
	switch v := m.(type) {
	case DBData:
		ok = i > DBDataHeaderSize
	case DBInfo:
		ok = v.Facilitator && i == len(b)-1
	case DBQuery:
		ok = v.Known > 0 && i == len(b)-8 // the optional known length cut off
	case DBFoundPeer:
		n := 0
		for _, p := range v.Peers {
			n += p.Len()
			ok = ok || i == n
		}
	}
	if !ok {
		t.Errorf("%v: prefix of %d/%d bytes parsed as %+v", m.Command(), i, len(b), got)
		return
	}
	if got.Len() != i {
		t.Errorf("%v: prefix of %d bytes has Len %d", m.Command(), i, got.Len())
	}
	if i > 4096 {
		return // Len is enough for the big ones; the full check is slow
	}
	if re := got.Append(nil); !bytes.Equal(re, b[:i]) {
		t.Errorf("%v: prefix of %d bytes re-encodes differently", m.Command(), i)
	}
}

func TestDBErrorsMentionWhat(t *testing.T) {
	_, err := ParseDBQuery(nil)
	if err == nil || !strings.Contains(err.Error(), "db_query") || !errors.Is(err, ErrTruncated) {
		t.Fatalf("got %v", err)
	}
}

func TestDBQueryHelpers(t *testing.T) {
	if !(DBQuery{}).WantsDescriptor() || (DBQuery{Chunk: 1}).WantsDescriptor() || (DBQuery{NbChunks: 1}).WantsDescriptor() {
		t.Error("WantsDescriptor")
	}
	if err := (DBQuery{Counter: MaxCounter + 1}).Validate(); !errors.Is(err, ErrBadValue) {
		t.Error(err)
	}
}

func TestDBDataChunks(t *testing.T) {
	m := DBData{Chunk: 10, Data: fill(2*ChunkSize+7, 0)}
	if m.NbChunks() != 3 {
		t.Fatalf("NbChunks %d", m.NbChunks())
	}
	if len(m.ChunkData(0)) != ChunkSize || len(m.ChunkData(1)) != ChunkSize || len(m.ChunkData(2)) != 7 {
		t.Fatal("chunk sizes")
	}
	if m.ChunkData(1)[0] != byte(ChunkSize%256) || m.ChunkData(2)[0] != byte((2*ChunkSize)%256) {
		t.Fatal("chunk offsets")
	}
	if MaxDBDataChunks*ChunkSize+DBDataHeaderSize > MaxDBMessage || (MaxDBDataChunks+1)*ChunkSize+DBDataHeaderSize <= MaxDBMessage {
		t.Fatal("MaxDBDataChunks")
	}
	// Parsed Data must not let an append overwrite what follows it.
	buf := append(DBData{Chunk: 1, Data: []byte{1}}.Append(nil), 0xaa)
	p, err := ParseDBData(buf[:len(buf)-1])
	if err != nil {
		t.Fatal(err)
	}
	_ = append(p.Data, 0xbb)
	if buf[len(buf)-1] != 0xaa {
		t.Fatal("Data capacity reaches past the message")
	}
}

func TestDBInfoPercent(t *testing.T) {
	for p, want := range []int{25, 50, 75, 100} {
		if got := (DBInfo{P: uint8(p)}).Percent(); got != want {
			t.Errorf("P %d: %d%%, want %d%%", p, got, want)
		}
	}
}

func TestDBEndReasonString(t *testing.T) {
	for r, want := range map[DBEndReason]string{0: "UNAVAILABLE", 1: "FINISHED", 2: "DESTROYED", 9: "DB_END_REASON(9)"} {
		if r.String() != want {
			t.Errorf("%d: %q", r, r.String())
		}
	}
}

func TestDBPeerValidate(t *testing.T) {
	if err := samplePeer4().Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (DBPeer{OnionKey: make([]byte, 31)}).Validate(); !errors.Is(err, ErrBadLength) {
		t.Fatal(err)
	}
	if err := (DBFoundPeer{}).Validate(); !errors.Is(err, ErrBadValue) {
		t.Fatal(err)
	}
	if err := (DBFoundPeer{Peers: make([]DBPeer, MaxFoundPeers+1)}).Validate(); !errors.Is(err, ErrBadValue) {
		t.Fatal(err)
	}
	if err := (DBFoundPeer{Peers: []DBPeer{{}}}).Validate(); !errors.Is(err, ErrBadLength) {
		t.Fatal(err)
	}
	// A v4-mapped IPv6 address keeps its 16-byte form.
	p := DBPeer{ID: nodeID(1), Addr: netip.AddrPortFrom(netip.AddrFrom16(netip.MustParseAddr("1.2.3.4").As16()), 9), OnionKey: fill(32, 0)}
	got, err := ParseDBPeer(p.Append(nil))
	if err != nil || got.Addr != p.Addr || p.Len() != 1+20+1+16+1+2+1+32 {
		t.Fatalf("mapped: %v %v", got.Addr, err)
	}
}

func TestDBConnectedValidate(t *testing.T) {
	d := sampleDescriptor()
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	long := d
	long.Type = strings.Repeat("a", MaxMIMEType+1)
	if err := long.Validate(); !errors.Is(err, ErrTooLong) {
		t.Fatal(err)
	}
	signed := d.AppendSigned(nil)
	full := d.Append(nil)
	if !bytes.Equal(full[:len(signed)], signed) || len(full) != len(signed)+1+SignatureSize {
		t.Fatal("AppendSigned is not the prefix before the signature")
	}
}
