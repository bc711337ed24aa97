package proto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func sampleRelay() RelayCell {
	return RelayCell{
		RelayHeader: RelayHeader{Command: RelayData, Recognized: 0, StreamID: 0x0102, Digest: [4]byte{9, 8, 7, 6}},
		Data:        fill(100, 1),
	}
}

func TestRelayRoundTrip(t *testing.T) {
	for _, r := range []RelayCell{sampleRelay(), {RelayHeader: RelayHeader{Command: RelayDBMore}, Data: fill(RelayDataSize, 3)}, {RelayHeader: RelayHeader{Command: RelayDrop}}} {
		b := r.Append([]byte{0xee})
		if len(b) != 1+CellPayloadSize || r.Len() != CellPayloadSize || b[0] != 0xee {
			t.Fatalf("encoded %d bytes", len(b))
		}
		b = b[1:]
		got, err := ParseRelay(b)
		if err != nil {
			t.Fatal(err)
		}
		if got.Command != r.Command || got.StreamID != r.StreamID || got.Digest != r.Digest ||
			int(got.Length) != len(r.Data) || !bytes.Equal(got.Data, r.Data) {
			t.Fatalf("round trip: %+v", got.RelayHeader)
		}
		var p [CellPayloadSize]byte
		for i := range p {
			p[i] = 0xff // PutRelay must clear the tail
		}
		if err := PutRelay(&p, r.RelayHeader, r.Data); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p[:], b) {
			t.Fatal("PutRelay differs from Append")
		}
	}
	b := sampleRelay().Append(nil)
	want := []byte{byte(RelayData), 0, 0, 1, 2, 9, 8, 7, 6, 0, 100}
	if !bytes.Equal(b[:RelayHeaderSize], want) {
		t.Fatalf("header %x, want %x", b[:RelayHeaderSize], want)
	}
	if !bytes.Equal(b[RelayHeaderSize+100:], make([]byte, RelayDataSize-100)) {
		t.Fatal("tail not zero")
	}
}

func TestRelayBad(t *testing.T) {
	good := sampleRelay().Append(nil)
	long := bytes.Clone(good)
	binary.BigEndian.PutUint16(long[9:], RelayDataSize+1)
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"unknown command 0", mutate(good, 0, 0), ErrUnknownCommand},
		{"unknown command 200", mutate(good, 0, 200), ErrUnknownCommand},
		{"length 499", long, ErrBadLength},
		{"length 0xffff", mutate(mutate(good, 9, 0xff), 10, 0xff), ErrBadLength},
		{"trailing", append(bytes.Clone(good), 0), ErrTrailing},
	}
	for _, tt := range tests {
		if _, err := ParseRelay(tt.b); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	for i := range len(good) {
		if _, err := ParseRelay(good[:i]); !errors.Is(err, ErrTruncated) {
			t.Fatalf("prefix %d: %v, want ErrTruncated", i, err)
		}
	}
	var p [CellPayloadSize]byte
	if err := PutRelay(&p, RelayHeader{}, make([]byte, RelayDataSize+1)); !errors.Is(err, ErrTooLong) {
		t.Fatal(err)
	}
}

func TestRelayCommands(t *testing.T) {
	for c := RelayDBQuery; c <= RelayDBLiveStart; c++ {
		if !c.IsDB() || !c.Known() {
			t.Errorf("%v: IsDB %v Known %v", c, c.IsDB(), c.Known())
		}
	}
	if RelayData.IsDB() || RelayCommand(52).IsDB() || RelayCommand(52).Known() {
		t.Error("IsDB/Known outside the family")
	}
	if RelayDBMore.String() != "DB_MORE" || RelayCommand(99).String() != "RELAY_CMD(99)" {
		t.Error("names")
	}
}

func TestDestroy(t *testing.T) {
	for r := DestroyNone; r <= DestroyNoSuchService; r++ {
		got, err := ParseDestroy([]byte{byte(r), 0, 0})
		if err != nil || got != r {
			t.Fatalf("%v: %v %v", r, got, err)
		}
	}
	if _, err := ParseDestroy([]byte{13}); !errors.Is(err, ErrBadValue) {
		t.Fatal(err)
	}
	if _, err := ParseDestroy(nil); !errors.Is(err, ErrTruncated) {
		t.Fatal(err)
	}
	if DestroyFinished.String() != "FINISHED" || DestroyReason(99).String() != "REASON(99)" {
		t.Fatal("names")
	}
}
