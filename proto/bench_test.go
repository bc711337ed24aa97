package proto

import "testing"

// BenchmarkRelayCellParseAppend parses a 509-byte relay payload and
// re-encodes it into a reused buffer: the per-cell cost at a circuit's end.
func BenchmarkRelayCellParseAppend(b *testing.B) {
	p := RelayCell{
		RelayHeader: RelayHeader{Command: RelayDBMore, StreamID: 7, Digest: [4]byte{1, 2, 3, 4}},
		Data:        fill(RelayDataSize, 1),
	}.Append(nil)
	buf := make([]byte, 0, CellPayloadSize)
	b.SetBytes(CellPayloadSize)
	b.ReportAllocs()
	for b.Loop() {
		r, err := ParseRelay(p)
		if err != nil {
			b.Fatal(err)
		}
		buf = r.Append(buf[:0])
	}
	if len(buf) != CellPayloadSize {
		b.Fatal("bad encoding")
	}
}

// BenchmarkDBDataParseAppend parses a DB_DATA message of 32 chunks and
// re-encodes it into a reused buffer.
func BenchmarkDBDataParseAppend(b *testing.B) {
	msg := DBData{Chunk: 1000, Timestamp: 1700000000, Data: fill(32*ChunkSize, 1)}.Append(nil)
	buf := make([]byte, 0, len(msg))
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		m, err := ParseDBData(msg)
		if err != nil {
			b.Fatal(err)
		}
		buf = m.Append(buf[:0])
	}
	if len(buf) != len(msg) {
		b.Fatal("bad encoding")
	}
}

// BenchmarkDBDataFrameAssemble frames a 32-chunk DB_DATA into relay cells
// in place, parses each cell and reassembles the message: the whole proto
// cost of moving one DB_DATA across a stream, without crypto.
func BenchmarkDBDataFrameAssemble(b *testing.B) {
	msg := DBData{Chunk: 1000, Data: fill(32*ChunkSize, 1)}.Append(nil)
	var (
		f DBFramer
		a Assembler
		p [CellPayloadSize]byte
	)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if err := f.Reset(RelayHeader{StreamID: 7}, RelayDBData, msg); err != nil {
			b.Fatal(err)
		}
		var got []byte
		for f.Next(&p) {
			r, err := ParseRelay(p[:])
			if err != nil {
				b.Fatal(err)
			}
			if _, m, err := a.Feed(r.Command, r.Data); err != nil {
				b.Fatal(err)
			} else if m != nil {
				got = m
			}
		}
		if len(got) != len(msg) {
			b.Fatal("not reassembled")
		}
	}
}

// BenchmarkBaselineCopy copies the same byte counts as the two ParseAppend
// benchmarks into a reused buffer: the floor they are measured against.
func BenchmarkBaselineCopy(b *testing.B) {
	for _, n := range []int{CellPayloadSize, DBDataHeaderSize + 32*ChunkSize} {
		b.Run(fmtSize(n), func(b *testing.B) {
			src := fill(n, 1)
			buf := make([]byte, 0, n)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				buf = append(buf[:0], src...)
			}
		})
	}
}

func fmtSize(n int) string {
	s := ""
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s + "B"
}
