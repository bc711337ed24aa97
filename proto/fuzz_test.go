package proto

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// Fuzz targets: one per message family. Each is seeded with valid
// encodings; on a successful parse the re-encoding must give the same bytes
// and Len must match it. Crashers live in testdata/fuzz/.

func FuzzCell(f *testing.F) {
	for _, cmd := range []Command{CmdPadding, CmdRelay, CmdDestroy, CmdRelayEarly, CmdCreate2, CmdCreated2} {
		f.Add(sampleCell(cmd).Append(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Cell
		if err := c.Parse(b); err != nil {
			return
		}
		re := c.Append(nil)
		if !bytes.Equal(re, b) || c.Len() != len(re) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func FuzzVarCell(f *testing.F) {
	f.Add(sampleVar().Append(nil))
	f.Add(VarCell{Command: CmdDHT}.Append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseVarCell(b)
		if err != nil {
			return
		}
		re := v.Append(nil)
		if !bytes.Equal(re, b) || v.Len() != len(re) {
			t.Fatalf("re-encoding differs")
		}
	})
}

// FuzzRelayCell: bytes after Length are padding that re-encoding zeroes, so
// the re-encoding must equal the input up to the data's end and be zero
// after it.
func FuzzRelayCell(f *testing.F) {
	f.Add(sampleRelay().Append(nil))
	f.Add(RelayCell{RelayHeader: RelayHeader{Command: RelayDBMore, StreamID: 1}, Data: fill(RelayDataSize, 0)}.Append(nil))
	f.Add(RelayCell{RelayHeader: RelayHeader{Command: RelayEnd}}.Append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRelay(b)
		if err != nil {
			return
		}
		re := r.Append(nil)
		end := RelayHeaderSize + int(r.Length)
		if r.Len() != len(re) || !bytes.Equal(re[:end], b[:end]) || !bytes.Equal(re[end:], make([]byte, len(re)-end)) {
			t.Fatalf("re-encoding differs")
		}
		var p [CellPayloadSize]byte
		if err := PutRelay(&p, r.RelayHeader, r.Data); err != nil || !bytes.Equal(p[:], re) {
			t.Fatalf("PutRelay differs from Append: %v", err)
		}
	})
}

// fuzzDB runs the common checks for one DB_* parser.
func fuzzDB[M DBMessage](f *testing.F, cmd RelayCommand, parse func([]byte) (M, error)) {
	for _, m := range sampleDBMessages() {
		if m.Command() == cmd && m.Len() <= 64<<10 {
			f.Add(m.Append(nil))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parse(b)
		generic, gerr := ParseDB(cmd, b)
		if (err == nil) != (gerr == nil) {
			t.Fatalf("Parse and ParseDB disagree: %v / %v", err, gerr)
		}
		if err != nil {
			return
		}
		re := m.Append(nil)
		if !bytes.Equal(re, b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", b, re)
		}
		if m.Len() != len(re) || generic.Len() != len(re) {
			t.Fatalf("Len %d / %d, encoded %d", m.Len(), generic.Len(), len(re))
		}
		if m.Command() != cmd {
			t.Fatalf("command %v", m.Command())
		}
	})
}

func FuzzDBConnected(f *testing.F)  { fuzzDB(f, RelayDBConnected, ParseDBConnected) }
func FuzzDBQuery(f *testing.F)      { fuzzDB(f, RelayDBQuery, ParseDBQuery) }
func FuzzDBData(f *testing.F)       { fuzzDB(f, RelayDBData, ParseDBData) }
func FuzzDBProof(f *testing.F)      { fuzzDB(f, RelayDBProof, ParseDBProof) }
func FuzzDBInfo(f *testing.F)       { fuzzDB(f, RelayDBInfo, ParseDBInfo) }
func FuzzDBPeer(f *testing.F)       { fuzzDB(f, RelayDBFindPeer, ParseDBFindPeer) }
func FuzzDBFoundPeer(f *testing.F)  { fuzzDB(f, RelayDBFoundPeer, ParseDBFoundPeer) }
func FuzzDBEnd(f *testing.F)        { fuzzDB(f, RelayDBEnd, ParseDBEnd) }
func FuzzDBAnnounce(f *testing.F)   { fuzzDB(f, RelayDBAnnounce, ParseDBAnnounce) }
func FuzzDBStreamInfo(f *testing.F) { fuzzDB(f, RelayDBStreamInfo, ParseDBStreamInfo) }
func FuzzDBLiveStart(f *testing.F)  { fuzzDB(f, RelayDBLiveStart, ParseDBLiveStart) }

// encodeCells turns cells into FuzzAssembler input: [cmd 1B][len 2B][data]...
func encodeCells(cells []frameCell) []byte {
	var b []byte
	for _, c := range cells {
		b = append(b, byte(c.cmd))
		b = binary.BigEndian.AppendUint16(b, uint16(len(c.data)))
		b = append(b, c.data...)
	}
	return b
}

// FuzzAssembler feeds a sequence of cells. Each completed message must
// re-frame into exactly the cells that carried it (framing is canonical),
// and must parse and re-encode like the per-message fuzzers demand.
func FuzzAssembler(f *testing.F) {
	var all []frameCell
	for _, m := range sampleDBMessages() {
		if m.Len() > 8<<10 {
			continue
		}
		cells := frames(f, m.Command(), m.Append(nil))
		f.Add(encodeCells(cells))
		all = append(all, cells...)
	}
	f.Add(encodeCells(all))
	f.Fuzz(func(t *testing.T, b []byte) {
		var a Assembler
		var since []frameCell // cells of the message in progress
		for len(b) >= 3 {
			cmd := RelayCommand(b[0])
			n := min(int(binary.BigEndian.Uint16(b[1:])), len(b)-3)
			data := b[3 : 3+n]
			b = b[3+n:]
			since = append(since, frameCell{cmd, data})
			gotCmd, msg, err := a.Feed(cmd, data)
			if err != nil {
				if a.Pending() {
					t.Fatal("pending after an error")
				}
				since = since[:0]
				continue
			}
			if msg == nil {
				if !a.Pending() {
					t.Fatal("cell accepted but no message pending")
				}
				continue
			}
			if a.Pending() {
				t.Fatal("pending after a completed message")
			}
			if gotCmd != since[0].cmd || len(msg) == 0 || len(msg) > MaxDBMessage {
				t.Fatalf("message %v of %d bytes", gotCmd, len(msg))
			}
			var f DBFramer
			if err := f.Reset(RelayHeader{}, gotCmd, msg); err != nil {
				t.Fatal(err)
			}
			var p [CellPayloadSize]byte
			for i := 0; f.Next(&p); i++ {
				r, err := ParseRelay(p[:])
				if err != nil || i >= len(since) || r.Command != since[i].cmd || !bytes.Equal(r.Data, since[i].data) {
					t.Fatalf("re-framing differs at cell %d (%v)", i, err)
				}
			}
			if f.Cells() != len(since) {
				t.Fatalf("re-framed into %d cells, fed %d", f.Cells(), len(since))
			}
			since = since[:0]
			if m, err := ParseDB(gotCmd, msg); err == nil {
				if re := m.Append(nil); !bytes.Equal(re, msg) || m.Len() != len(re) {
					t.Fatalf("%v: re-encoding differs", gotCmd)
				}
			}
		}
	})
}
