package proto

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// cellPipe is a CellStream over a slice of cells: what is written can be
// read back in order.
type cellPipe struct {
	cmds  []RelayCommand
	datas [][]byte
}

func (p *cellPipe) WriteCell(cmd RelayCommand, data []byte) error {
	p.cmds = append(p.cmds, cmd)
	p.datas = append(p.datas, bytes.Clone(data))
	return nil
}

func (p *cellPipe) ReadCell(buf []byte) (RelayCommand, int, error) {
	if len(p.cmds) == 0 {
		return 0, 0, io.EOF
	}
	cmd, data := p.cmds[0], p.datas[0]
	p.cmds, p.datas = p.cmds[1:], p.datas[1:]
	return cmd, copy(buf, data), nil
}

func (p *cellPipe) Close() error { return nil }

var errViolation = errors.New("test: protocol violation")

// Every message goes through Send and comes back whole from Recv and
// RecvMessage, one cell or many; what the peer gets wrong wraps the
// caller's violation; a truncated stream ends with the stream's error.
func TestDBConn(t *testing.T) {
	p := &cellPipe{}
	c := NewDBConn(p, errViolation)
	msgs := sampleDBMessages()
	for _, m := range msgs {
		if err := c.Send(m); err != nil {
			t.Fatalf("send %v: %v", m.Command(), err)
		}
	}
	for i, m := range msgs {
		var got DBMessage
		var err error
		if i%2 == 0 {
			got, err = c.RecvMessage()
		} else {
			var cmd RelayCommand
			var b []byte
			if cmd, b, err = c.Recv(); err == nil {
				got, err = ParseDB(cmd, b)
			}
		}
		if err != nil || !bytes.Equal(got.Append(nil), m.Append(nil)) || got.Command() != m.Command() {
			t.Fatalf("message %d (%v): got %v, %v", i, m.Command(), got, err)
		}
	}
	if _, _, err := c.Recv(); err != io.EOF {
		t.Fatalf("empty stream: %v, want io.EOF", err)
	}

	for _, tc := range []struct {
		name string
		feed func(p *cellPipe)
		max  int
	}{
		{"a DATA cell", func(p *cellPipe) { p.WriteCell(RelayData, []byte("x")) }, 0},
		{"DB_MORE first", func(p *cellPipe) { p.WriteCell(RelayDBMore, make([]byte, RelayDataSize)) }, 0},
		{"longer than Max", func(p *cellPipe) {
			w := NewDBConn(p, nil)
			w.Send(DBData{Chunk: 1, Data: make([]byte, 2*ChunkSize)})
		}, DBFirstFrameData},
		{"does not parse", func(p *cellPipe) { p.WriteCell(RelayDBQuery, []byte{0, 0, 0, 1, 7}) }, 0},
	} {
		p := &cellPipe{}
		tc.feed(p)
		c := NewDBConn(p, errViolation)
		c.Asm.Max = tc.max
		if _, err := c.RecvMessage(); !errors.Is(err, errViolation) {
			t.Errorf("%s: %v, want the violation", tc.name, err)
		}
	}

	// A message cut short: the stream's end, not a message.
	p = &cellPipe{}
	w := NewDBConn(p, nil)
	w.Send(DBData{Chunk: 1, Data: make([]byte, 3*ChunkSize)})
	p.cmds, p.datas = p.cmds[:1], p.datas[:1]
	c = NewDBConn(p, errViolation)
	if m, err := c.RecvMessage(); err != io.EOF {
		t.Fatalf("truncated message: %v, %v, want io.EOF", m, err)
	}
}
