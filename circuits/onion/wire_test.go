package onion

import (
	"errors"
	"testing"

	"veil/proto"
)

// The bodies' parsers and their fuzzers live in proto; ParseReason is the
// one with behaviour of its own: a reason of 0 whenever the body is bad.
func TestParseReason(t *testing.T) {
	tests := []struct {
		b    []byte
		want uint8
		err  error
	}{
		{[]byte{6}, 6, nil},
		{[]byte{0}, 0, nil},
		{nil, 0, proto.ErrTruncated},
		{[]byte{7, 1}, 0, proto.ErrTrailing},
	}
	for _, tt := range tests {
		got, err := ParseReason(tt.b)
		if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
			t.Errorf("ParseReason(%x) = %d, %v; want %d, %v", tt.b, got, err, tt.want, tt.err)
		}
	}
}
