package proto

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// cellStream encodes n fixed cells, n PADDING cells and n var cells of
// growing size, interleaved.
func cellStream(n int) []byte {
	var b []byte
	for i := range n {
		var c Cell
		c.SetCircID(uint32(i))
		c.SetCommand(CmdRelay)
		for j := range c.Payload() {
			c.Payload()[j] = byte(i + j)
		}
		b = c.Append(b)
		b = append(b, make([]byte, CellSize)...) // PADDING on circuit 0
		b = VarCell{CircID: uint32(i), Command: CmdDHT, Payload: bytes.Repeat([]byte{byte(i)}, i*97)}.Append(b)
	}
	return b
}

func TestCellReaderFrames(t *testing.T) {
	const n = 60 // var cells up to 5.7 KB: several cross the reader's buffer
	in := cellStream(n)
	r := NewCellReader(bytes.NewReader(in), 0)
	var c Cell
	for i := range n {
		for k, wantCmd := range []Command{CmdRelay, CmdPadding, CmdDHT} {
			v, isVar, err := r.ReadCell(&c)
			if err != nil {
				t.Fatalf("cell %d.%d: %v", i, k, err)
			}
			if isVar != (wantCmd == CmdDHT) {
				t.Fatalf("cell %d.%d: isVar %v", i, k, isVar)
			}
			switch wantCmd {
			case CmdRelay:
				if c.CircID() != uint32(i) || c.Command() != CmdRelay || c.Payload()[100] != byte(i+100) {
					t.Fatalf("fixed cell %d: circ %d cmd %v", i, c.CircID(), c.Command())
				}
			case CmdPadding:
				if c.Command() != CmdPadding {
					t.Fatalf("padding %d: %v", i, c.Command())
				}
			case CmdDHT:
				if v.CircID != uint32(i) || !bytes.Equal(v.Payload, bytes.Repeat([]byte{byte(i)}, i*97)) {
					t.Fatalf("var cell %d: circ %d, %d bytes", i, v.CircID, len(v.Payload))
				}
			}
		}
	}
	if _, _, err := r.ReadCell(&c); err != io.EOF {
		t.Fatalf("end between cells: %v, want io.EOF", err)
	}
}

func TestCellReaderTruncated(t *testing.T) {
	in := cellStream(3)
	ends := map[int]bool{}
	for off := 0; off < len(in); {
		ends[off] = true
		if Command(in[off+CircIDSize]).IsVariable() {
			v, _ := ParseVarCell(in[off : off+VarHeaderSize+int(in[off+5])<<8+int(in[off+6])])
			off += v.Len()
		} else {
			off += CellSize
		}
	}
	for cut := 0; cut < len(in); cut++ {
		r := NewCellReader(bytes.NewReader(in[:cut]), 0)
		var c Cell
		var err error
		for range 20 {
			if _, _, err = r.ReadCell(&c); err != nil {
				break
			}
		}
		switch {
		case ends[cut] && err != io.EOF:
			t.Fatalf("cut at a cell boundary %d: %v, want io.EOF", cut, err)
		case !ends[cut] && (!errors.Is(err, ErrTruncated) || !errors.Is(err, io.ErrUnexpectedEOF)):
			t.Fatalf("cut inside a cell at %d: %v, want ErrTruncated", cut, err)
		}
	}
}

func TestCellReaderRefuses(t *testing.T) {
	for name, tc := range map[string]struct {
		in   []byte
		want error
	}{
		"unknown fixed command": {append([]byte{0, 0, 0, 1, 7}, make([]byte, CellPayloadSize)...), ErrUnknownCommand},
		"unknown var command":   {[]byte{0, 0, 0, 1, 200, 0, 1, 'x'}, ErrUnknownCommand},
		"var cell too long":     {[]byte{0, 0, 0, 1, byte(CmdDHT), 0x20, 0x01}, ErrTooLong},
	} {
		var c Cell
		_, _, err := NewCellReader(bytes.NewReader(tc.in), 0).ReadCell(&c)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	// The source's own errors come back as they are.
	boom := errors.New("boom")
	var c Cell
	if _, _, err := NewCellReader(io.MultiReader(bytes.NewReader(cellStream(1)[:3]), &errReader{boom}), 0).ReadCell(&c); err != boom {
		t.Fatalf("source error: %v", err)
	}
}

type errReader struct{ err error }

func (r *errReader) Read([]byte) (int, error) { return 0, r.err }

// FuzzCellReader: whatever the bytes, the reader frames exactly the cells a
// straight walk of the framing finds, in order, then stops with an error.
func FuzzCellReader(f *testing.F) {
	f.Add(cellStream(2))
	f.Add(cellStream(2)[:700])
	f.Add([]byte{0, 0, 0, 1, byte(CmdDHT), 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewCellReader(bytes.NewReader(in), 0)
		rest := in
		var c Cell
		for i := 0; ; i++ {
			v, isVar, err := r.ReadCell(&c)
			if err != nil {
				if err == io.EOF && len(rest) != 0 {
					t.Fatalf("io.EOF with %d bytes unframed", len(rest))
				}
				return
			}
			if i > len(in)/CellHeaderSize {
				t.Fatal("more cells than the input holds")
			}
			var want []byte
			var got []byte
			if isVar {
				want, got = rest[:v.Len()], v.Append(nil)
			} else {
				want, got = rest[:CellSize], c[:]
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("cell %d differs from the input", i)
			}
			rest = rest[len(want):]
		}
	})
}
