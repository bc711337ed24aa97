package gateway

import (
	"errors"
	"testing"
)

func TestParseRange(t *testing.T) {
	const size = 1000
	for _, tt := range []struct {
		field  string
		ok     bool
		unsat  bool
		r      byteRange
		sizeIs int64
	}{
		{field: ""},
		{field: "bytes=0-0", ok: true, r: byteRange{0, 1}},
		{field: "bytes=0-999", ok: true, r: byteRange{0, 1000}},
		{field: "bytes=10-2000", ok: true, r: byteRange{10, 1000}},
		{field: "bytes=990-", ok: true, r: byteRange{990, 1000}},
		{field: "bytes=-10", ok: true, r: byteRange{990, 1000}},
		{field: "bytes=-5000", ok: true, r: byteRange{0, 1000}},
		{field: "Bytes = 5-6", ok: true, r: byteRange{5, 7}},
		{field: "bytes=0-99999999999999999999999", ok: true, r: byteRange{0, 1000}},
		{field: "bytes=1000-", unsat: true},
		{field: "bytes=1000-1001", unsat: true},
		{field: "bytes=-0", unsat: true},
		{field: "bytes=99999999999999999999999-", unsat: true},
		{field: "bytes=0-0", unsat: true, sizeIs: -1}, // an empty content
		{field: "bytes=5-4"},                          // invalid: ignored
		{field: "bytes=0-1,3-4"},
		{field: "items=0-1"},
		{field: "bytes=a-b"},
		{field: "bytes=-"},
		{field: "bytes=+1-2"},
		{field: "bytes= -1-2"},
		{field: "bytes"},
		{field: "bytes=1"},
	} {
		sz := int64(size)
		if tt.sizeIs == -1 {
			sz = 0
		}
		r, ok, err := parseRange(tt.field, sz)
		if errors.Is(err, errUnsatisfiable) != tt.unsat || ok != tt.ok || (ok && r != tt.r) {
			t.Errorf("parseRange(%q) = %v %v %v", tt.field, r, ok, err)
		}
	}
}

// FuzzParseRange: any field gives a range inside the content, or none.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-0", "bytes=-5", "bytes=7-", "bytes=1-2,3-4", "bytes=99999999999999999999-"} {
		f.Add(s, int64(100))
	}
	f.Fuzz(func(t *testing.T, field string, size int64) {
		if size < 0 {
			size = -size
		}
		size %= 1 << 50
		r, ok, err := parseRange(field, size)
		if ok && (err != nil || r.start < 0 || r.start >= r.end || r.end > size) {
			t.Fatalf("parseRange(%q, %d) = %v %v", field, size, r, err)
		}
		if !ok && err != nil && !errors.Is(err, errUnsatisfiable) {
			t.Fatalf("unexpected error %v", err)
		}
	})
}
