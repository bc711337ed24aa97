package proto

import (
	"bytes"
	"errors"
	"testing"
)

func sampleCell(cmd Command) *Cell {
	var c Cell
	c.SetCircID(0x01020304)
	c.SetCommand(cmd)
	copy(c.Payload(), fill(CellPayloadSize, 7))
	return &c
}

func TestCellRoundTrip(t *testing.T) {
	for _, cmd := range []Command{CmdPadding, CmdRelay, CmdDestroy, CmdRelayEarly, CmdCreate2, CmdCreated2} {
		c := sampleCell(cmd)
		b := c.Append(nil)
		if len(b) != CellSize || c.Len() != CellSize {
			t.Fatalf("%v: %d bytes", cmd, len(b))
		}
		if !bytes.Equal(b[:5], []byte{1, 2, 3, 4, byte(cmd)}) {
			t.Fatalf("%v: header %x", cmd, b[:5])
		}
		got, err := ParseCell(b)
		if err != nil {
			t.Fatalf("%v: %v", cmd, err)
		}
		if *got != *c || got.CircID() != 0x01020304 || got.Command() != cmd {
			t.Fatalf("%v: round trip differs", cmd)
		}
		if !bytes.Equal(got.PayloadArray()[:], c.Payload()) {
			t.Fatalf("%v: PayloadArray differs from Payload", cmd)
		}
	}
}

func TestCellBad(t *testing.T) {
	good := sampleCell(CmdRelay).Append(nil)
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"unknown command", mutate(good, 4, 2), ErrUnknownCommand},
		{"variable command", mutate(good, 4, byte(CmdDHT)), ErrUnknownCommand},
		{"unknown variable command", mutate(good, 4, 200), ErrUnknownCommand},
		{"trailing", append(bytes.Clone(good), 0), ErrTrailing},
	}
	for _, tt := range tests {
		var c Cell
		if err := c.Parse(tt.b); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	for i := range len(good) {
		if _, err := ParseCell(good[:i]); !errors.Is(err, ErrTruncated) {
			t.Fatalf("prefix %d: %v, want ErrTruncated", i, err)
		}
	}
}

func TestCellPool(t *testing.T) {
	c := GetCell()
	c.SetCommand(CmdRelay)
	c.Payload()[0] = 9
	PutCell(c)
	for range 4 {
		d := GetCell()
		if *d != (Cell{}) {
			t.Fatal("GetCell returned a dirty cell")
		}
		PutCell(d)
	}
}

func TestCommandNames(t *testing.T) {
	for cmd, want := range map[Command]string{CmdRelay: "RELAY", CmdRelayEarly: "RELAY_EARLY", CmdDHT: "DHT", 77: "CMD(77)"} {
		if cmd.String() != want {
			t.Errorf("%d: %q", cmd, cmd.String())
		}
	}
	if !CmdDHT.IsVariable() || CmdRelay.IsVariable() || Command(77).Known() {
		t.Error("IsVariable/Known")
	}
}

func sampleVar() VarCell {
	return VarCell{CircID: 0xa0b0c0d0, Command: CmdDHT, Payload: fill(300, 1)}
}

func TestVarCellRoundTrip(t *testing.T) {
	for _, v := range []VarCell{sampleVar(), {Command: CmdDHT}, {CircID: 1, Command: CmdDHT, Payload: fill(MaxVarPayload, 0)}} {
		b := v.Append(nil)
		if len(b) != v.Len() {
			t.Fatalf("Len %d, encoded %d", v.Len(), len(b))
		}
		got, err := ParseVarCell(b)
		if err != nil {
			t.Fatal(err)
		}
		if got.CircID != v.CircID || got.Command != v.Command || !bytes.Equal(got.Payload, v.Payload) {
			t.Fatalf("round trip: %+v", got)
		}
	}
	b := sampleVar().Append(nil)
	if !bytes.Equal(b[:7], []byte{0xa0, 0xb0, 0xc0, 0xd0, byte(CmdDHT), 1, 44}) {
		t.Fatalf("header %x", b[:7])
	}
}

func TestVarCellBad(t *testing.T) {
	good := sampleVar().Append(nil)
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"fixed command", mutate(good, 4, byte(CmdRelay)), ErrUnknownCommand},
		{"unknown variable command", mutate(good, 4, 200), ErrUnknownCommand},
		{"over MaxVarPayload", append(mutate(mutate(good, 5, 0x20), 6, 1), make([]byte, MaxVarPayload)...), ErrTooLong},
		{"trailing", append(bytes.Clone(good), 0), ErrTrailing},
	}
	for _, tt := range tests {
		if _, err := ParseVarCell(tt.b); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	for i := range len(good) {
		if _, err := ParseVarCell(good[:i]); !errors.Is(err, ErrTruncated) {
			t.Fatalf("prefix %d: %v, want ErrTruncated", i, err)
		}
	}
}

func TestVarCellAppendPanicsOverLimit(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	VarCell{Command: CmdDHT, Payload: make([]byte, MaxVarPayload+1)}.Append(nil)
}
