package gateway

import (
	"errors"
	"strconv"
	"strings"
)

// byteRange is a satisfiable range of a content: bytes [start, end).
type byteRange struct{ start, end int64 }

// errUnsatisfiable: a Range field whose every range lies past the end
// (RFC 9110 15.5.17: answered 416 with Content-Range: bytes */size).
var errUnsatisfiable = errors.New("gateway: range not satisfiable")

// parseRange reads a Range field (RFC 9110 14.2) against a content of
// size bytes. ok is false when the field is to be ignored, the whole
// content being served: no field, another unit, a malformed field, or
// several ranges (RFC 9110 lets a server ignore Range; one range is
// what players ask). It returns errUnsatisfiable for a single range
// starting past the end, and for a suffix of length 0.
func parseRange(field string, size int64) (r byteRange, ok bool, err error) {
	if field == "" {
		return r, false, nil
	}
	unit, spec, found := strings.Cut(field, "=")
	if !found || !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		return r, false, nil
	}
	spec = strings.TrimSpace(spec)
	if strings.Contains(spec, ",") {
		return r, false, nil
	}
	first, last, found := strings.Cut(spec, "-")
	if !found {
		return r, false, nil
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" {
		// A suffix: the last n bytes.
		n, ok := digits(last)
		if !ok {
			return r, false, nil
		}
		if n == 0 || size == 0 {
			return r, false, errUnsatisfiable
		}
		return byteRange{start: size - min(n, size), end: size}, true, nil
	}
	start, ok := digits(first)
	if !ok {
		return r, false, nil
	}
	end := size // open: to the end
	if last != "" {
		l, ok := digits(last)
		if !ok || l < start {
			return r, false, nil // invalid: ignored
		}
		if l < size {
			end = l + 1
		}
	}
	if start >= size {
		return r, false, errUnsatisfiable
	}
	return byteRange{start: start, end: end}, true, nil
}

// digits parses a non-empty run of ASCII digits that fits an int64.
func digits(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		if len(s) > 18 && strings.Trim(s, "0123456789") == "" {
			// Larger than any content: clamp rather than refuse, so
			// that "bytes=0-99999999999999999999" means "to the end".
			return 1<<62 - 1, true
		}
		return 0, false
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}
