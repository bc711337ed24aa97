package proto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

type frameCell struct {
	cmd  RelayCommand
	data []byte
}

// frames splits msg with AppendDBFrames and checks every payload parses as
// a relay cell of the stream.
func frames(t testing.TB, cmd RelayCommand, msg []byte) []frameCell {
	t.Helper()
	h := RelayHeader{StreamID: 77, Digest: [4]byte{1, 2, 3, 4}}
	b, err := AppendDBFrames(nil, h, cmd, msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != DBFrameCells(len(msg))*CellPayloadSize {
		t.Fatalf("%d bytes of frames for a %d-byte message", len(b), len(msg))
	}
	var out []frameCell
	for len(b) > 0 {
		r, err := ParseRelay(b[:CellPayloadSize])
		if err != nil {
			t.Fatal(err)
		}
		if r.StreamID != 77 || r.Digest != h.Digest || r.Recognized != 0 {
			t.Fatalf("header not from the template: %+v", r.RelayHeader)
		}
		out = append(out, frameCell{r.Command, r.Data})
		b = b[CellPayloadSize:]
	}
	return out
}

func TestDBFrameCells(t *testing.T) {
	for n, want := range map[int]int{1: 1, 493: 1, 494: 1, 495: 2, 494 + 498: 2, 494 + 499: 3, 494 + 2*498: 3,
		MaxDBMessage: 1 + (MaxDBMessage-494+497)/498} {
		if got := DBFrameCells(n); got != want {
			t.Errorf("DBFrameCells(%d) = %d, want %d", n, got, want)
		}
	}
}

func TestFrameRoundTrip(t *testing.T) {
	var a Assembler
	for _, n := range []int{1, 2, 493, 494, 495, 496, 494 + 497, 494 + 498, 494 + 499, 494 + 2*498, 32*ChunkSize + DBDataHeaderSize, MaxDBMessage - 1, MaxDBMessage} {
		msg := fill(n, byte(n))
		cells := frames(t, RelayDBData, msg)
		if len(cells) != DBFrameCells(n) {
			t.Fatalf("%d: %d cells", n, len(cells))
		}
		if cells[0].cmd != RelayDBData || binary.BigEndian.Uint32(cells[0].data) != uint32(n) {
			t.Fatalf("%d: first cell %v %x", n, cells[0].cmd, cells[0].data[:4])
		}
		if want := DBFrameHeaderSize + min(n, DBFirstFrameData); len(cells[0].data) != want {
			t.Fatalf("%d: first cell carries %d bytes, want %d", n, len(cells[0].data), want)
		}
		for i, c := range cells {
			if i > 0 && c.cmd != RelayDBMore {
				t.Fatalf("%d: cell %d command %v", n, i, c.cmd)
			}
			if i > 0 && i < len(cells)-1 && len(c.data) != RelayDataSize {
				t.Fatalf("%d: cell %d not full", n, i)
			}
			cmd, got, err := a.Feed(c.cmd, c.data)
			if err != nil {
				t.Fatalf("%d: cell %d: %v", n, i, err)
			}
			if i < len(cells)-1 {
				if got != nil || !a.Pending() {
					t.Fatalf("%d: message after cell %d of %d", n, i, len(cells))
				}
				continue
			}
			if cmd != RelayDBData || !bytes.Equal(got, msg) || a.Pending() {
				t.Fatalf("%d: reassembled %v %d bytes, pending %v", n, cmd, len(got), a.Pending())
			}
		}
		if cap(a.buf) > assemblerKeep {
			t.Fatalf("%d: idle assembler keeps %d bytes", n, cap(a.buf))
		}
	}
}

// TestFrameAllMessages frames each sample message, reassembles and parses it.
func TestFrameAllMessages(t *testing.T) {
	var a Assembler
	for _, m := range sampleDBMessages() {
		var got DBMessage
		for _, c := range frames(t, m.Command(), m.Append(nil)) {
			cmd, msg, err := a.Feed(c.cmd, c.data)
			if err != nil {
				t.Fatal(err)
			}
			if msg != nil {
				if got, err = ParseDB(cmd, msg); err != nil {
					t.Fatal(err)
				}
			}
		}
		if got == nil || !bytes.Equal(got.Append(nil), m.Append(nil)) {
			t.Fatalf("%v: not reassembled", m.Command())
		}
	}
}

func TestDBFramerInPlace(t *testing.T) {
	msg := fill(1200, 5)
	var f DBFramer
	if !f.Done() || f.Next(new([CellPayloadSize]byte)) {
		t.Fatal("zero DBFramer is not done")
	}
	if err := f.Reset(RelayHeader{Command: RelayData, StreamID: 3, Length: 9}, RelayDBFoundPeer, msg); err != nil {
		t.Fatal(err)
	}
	if f.Cells() != 3 {
		t.Fatalf("Cells %d", f.Cells())
	}
	var a Assembler
	n := 0
	for !f.Done() {
		c := GetCell()
		for i := range c.Payload() {
			c.Payload()[i] = 0xff // the unused tail must come out zeroed
		}
		if !f.Next(c.PayloadArray()) {
			t.Fatal("Next wrote nothing before Done")
		}
		r, err := ParseRelay(c.Payload())
		if err != nil {
			t.Fatal(err)
		}
		if r.StreamID != 3 || !bytes.Equal(c.Payload()[RelayHeaderSize+int(r.Length):], make([]byte, RelayDataSize-int(r.Length))) {
			t.Fatal("stream ID or zero tail")
		}
		cmd, got, err := a.Feed(r.Command, r.Data)
		if err != nil {
			t.Fatal(err)
		}
		if got != nil && (cmd != RelayDBFoundPeer || !bytes.Equal(got, msg)) {
			t.Fatal("reassembled differs")
		}
		PutCell(c)
		n++
	}
	if n != 3 || f.Next(new([CellPayloadSize]byte)) {
		t.Fatalf("%d cells", n)
	}
}

func TestDBFramerResetErrors(t *testing.T) {
	tests := []struct {
		name string
		cmd  RelayCommand
		msg  []byte
		want error
	}{
		{"not DB", RelayData, []byte{1}, ErrUnknownCommand},
		{"DB_MORE", RelayDBMore, []byte{1}, ErrUnknownCommand},
		{"empty", RelayDBEnd, nil, ErrBadLength},
		{"too long", RelayDBData, make([]byte, MaxDBMessage+1), ErrTooLong},
	}
	for _, tt := range tests {
		var f DBFramer
		if err := f.Reset(RelayHeader{}, tt.cmd, tt.msg); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
		if !f.Done() || f.Cells() != 0 {
			t.Errorf("%s: framer not empty after a failed Reset", tt.name)
		}
		if b, err := AppendDBFrames([]byte{1}, RelayHeader{}, tt.cmd, tt.msg); err == nil || !bytes.Equal(b, []byte{1}) {
			t.Errorf("%s: AppendDBFrames: %v", tt.name, err)
		}
	}
}

func first(total uint32, body []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, total), body...)
}

// TestAssemblerErrors feeds bad cell sequences; the last cell of each must
// fail with want, the earlier ones must be accepted.
func TestAssemblerErrors(t *testing.T) {
	big := frames(t, RelayDBData, fill(2000, 0)) // 5 cells
	tests := []struct {
		name  string
		cells []frameCell
		want  error
	}{
		{"DB_MORE first", []frameCell{{RelayDBMore, fill(10, 0)}}, ErrFraming},
		{"DB_MORE after complete", []frameCell{{RelayDBEnd, first(1, []byte{0})}, {RelayDBMore, []byte{0}}}, ErrFraming},
		{"start while incomplete", []frameCell{big[0], big[1], {RelayDBEnd, first(1, []byte{0})}}, ErrFraming},
		{"same command while incomplete", []frameCell{big[0], big[0]}, ErrFraming},
		{"not a DB command", []frameCell{{RelayData, first(1, []byte{0})}}, ErrUnknownCommand},
		{"not a DB command mid-message", []frameCell{big[0], {RelayEnd, nil}}, ErrUnknownCommand},
		{"empty first cell", []frameCell{{RelayDBEnd, nil}}, ErrTruncated},
		{"3-byte header", []frameCell{{RelayDBEnd, []byte{0, 0, 1}}}, ErrTruncated},
		{"zero total", []frameCell{{RelayDBEnd, first(0, nil)}}, ErrBadLength},
		{"over MaxDBMessage", []frameCell{{RelayDBData, first(MaxDBMessage+1, fill(DBFirstFrameData, 0))}}, ErrTooLong},
		{"total 0xffffffff", []frameCell{{RelayDBData, first(0xffffffff, fill(DBFirstFrameData, 0))}}, ErrTooLong},
		{"first cell over total", []frameCell{{RelayDBEnd, first(1, []byte{0, 1})}}, ErrBadLength},
		{"first cell short", []frameCell{{RelayDBData, first(100, fill(99, 0))}}, ErrFraming},
		{"first cell not full", []frameCell{{RelayDBData, first(1000, fill(400, 0))}}, ErrFraming},
		{"continuation over total", []frameCell{{RelayDBData, first(500, fill(DBFirstFrameData, 0))}, {RelayDBMore, fill(7, 0)}}, ErrBadLength},
		{"continuation short", []frameCell{{RelayDBData, first(500, fill(DBFirstFrameData, 0))}, {RelayDBMore, fill(5, 0)}}, ErrFraming},
		{"continuation empty", []frameCell{big[0], {RelayDBMore, nil}}, ErrFraming},
		{"continuation not full", []frameCell{big[0], {RelayDBMore, fill(497, 0)}}, ErrFraming},
		{"cell over 498", []frameCell{big[0], {RelayDBMore, fill(499, 0)}}, ErrTooLong},
	}
	for _, tt := range tests {
		var a Assembler
		for i, c := range tt.cells {
			_, msg, err := a.Feed(c.cmd, c.data)
			if i < len(tt.cells)-1 {
				if err != nil {
					t.Fatalf("%s: cell %d: %v", tt.name, i, err)
				}
				continue
			}
			if !errors.Is(err, tt.want) || msg != nil {
				t.Errorf("%s: got (%d bytes, %v), want %v", tt.name, len(msg), err, tt.want)
			}
		}
		if a.Pending() {
			t.Errorf("%s: still pending after an error", tt.name)
		}
		// After an error the assembler takes a fresh message.
		if cmd, msg, err := a.Feed(RelayDBEnd, first(1, []byte{2})); err != nil || cmd != RelayDBEnd || !bytes.Equal(msg, []byte{2}) {
			t.Errorf("%s: not usable after the error: %v", tt.name, err)
		}
	}
}

// TestAssemblerRefusesBeforeAllocating checks an oversized announcement
// leaves no buffer behind, and a large one grows only with what arrives.
func TestAssemblerRefusesBeforeAllocating(t *testing.T) {
	var a Assembler
	if _, _, err := a.Feed(RelayDBData, first(MaxDBMessage+1, fill(DBFirstFrameData, 0))); !errors.Is(err, ErrTooLong) {
		t.Fatal(err)
	}
	if cap(a.buf) != 0 {
		t.Fatalf("buffer of %d bytes after a refused message", cap(a.buf))
	}
	if _, _, err := a.Feed(RelayDBData, first(MaxDBMessage, fill(DBFirstFrameData, 0))); err != nil {
		t.Fatal(err)
	}
	if cap(a.buf) > 8192 {
		t.Fatalf("announced 1 MiB, got 494 bytes, buffered %d", cap(a.buf))
	}
	a.Reset()
	if a.Pending() || len(a.buf) != 0 {
		t.Fatal("Reset")
	}
}

// TestAssemblerMax checks a lowered limit refuses a longer message at its
// first cell, keeps refusing after Reset, and never raises MaxDBMessage.
func TestAssemblerMax(t *testing.T) {
	a := Assembler{Max: 10}
	if _, _, err := a.Feed(RelayDBData, first(11, fill(11, 0))); !errors.Is(err, ErrTooLong) {
		t.Fatalf("11 bytes with Max 10: %v", err)
	}
	if _, _, err := a.Feed(RelayDBData, first(600, fill(DBFirstFrameData, 0))); !errors.Is(err, ErrTooLong) || cap(a.buf) != 0 {
		t.Fatalf("multi-cell message over Max: %v, buffered %d", err, cap(a.buf))
	}
	if cmd, msg, err := a.Feed(RelayDBQuery, first(10, fill(10, 3))); err != nil || cmd != RelayDBQuery || !bytes.Equal(msg, fill(10, 3)) {
		t.Fatalf("10 bytes with Max 10: %v", err)
	}
	huge := Assembler{Max: 2 * MaxDBMessage}
	if _, _, err := huge.Feed(RelayDBData, first(MaxDBMessage+1, fill(DBFirstFrameData, 0))); !errors.Is(err, ErrTooLong) {
		t.Fatalf("Max over MaxDBMessage raised the limit: %v", err)
	}
}

// TestAssemblerTruncated checks that every truncation of a framed message
// is caught: cut cells leave it pending, a cut last cell is an error.
func TestAssemblerTruncated(t *testing.T) {
	for _, m := range sampleDBMessages() {
		cells := frames(t, m.Command(), m.Append(nil))
		last := cells[len(cells)-1]
		for i := range len(last.data) {
			var a Assembler
			for _, c := range cells[:len(cells)-1] {
				if _, msg, err := a.Feed(c.cmd, c.data); err != nil || msg != nil {
					t.Fatalf("%v: %v", m.Command(), err)
				}
			}
			if _, msg, err := a.Feed(last.cmd, last.data[:i]); err == nil || msg != nil {
				t.Fatalf("%v: last cell cut to %d/%d bytes: no error", m.Command(), i, len(last.data))
			}
		}
	}
}

// TestAssemblerNoAllocs checks steady-state reassembly of a 32-chunk
// DB_DATA allocates nothing.
func TestAssemblerNoAllocs(t *testing.T) {
	m := DBData{Chunk: 1, Data: fill(32*ChunkSize, 0)}
	cells := frames(t, RelayDBData, m.Append(nil))
	var a Assembler
	allocs := testing.AllocsPerRun(20, func() {
		for _, c := range cells {
			_, msg, err := a.Feed(c.cmd, c.data)
			if err != nil {
				t.Fatal(err)
			}
			if msg != nil {
				if _, err := ParseDBData(msg); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per message", allocs)
	}
	var f DBFramer
	var p [CellPayloadSize]byte
	msg := m.Append(nil)
	allocs = testing.AllocsPerRun(20, func() {
		_ = f.Reset(RelayHeader{}, RelayDBData, msg)
		for f.Next(&p) {
		}
	})
	if allocs != 0 {
		t.Fatalf("DBFramer: %v allocs per message", allocs)
	}
}
