package proto

import "fmt"

// MaxBeginDest bounds a BEGIN destination (its length is one byte).
const MaxBeginDest = 255

// Begin is the data of a BEGIN relay cell: the destination the last hop
// hands the stream to (a service name such as "echo" or "ordb", or
// "host:port" for an exit).
//
//	[destination length 1B = 1..255][destination]
type Begin struct {
	Dest string // 1..MaxBeginDest bytes
}

// ParseBegin decodes BEGIN relay data exactly.
func ParseBegin(b []byte) (Begin, error) {
	r := reader{b: b, what: "begin"}
	n := int(r.byte())
	if r.err == nil && n == 0 {
		r.fail(fmt.Errorf("begin: %w: empty destination", ErrBadLength))
	}
	d := r.take(n)
	if err := r.end(); err != nil {
		return Begin{}, err
	}
	return Begin{Dest: string(d)}, nil
}

// Len is the encoded size.
func (m Begin) Len() int { return 1 + len(m.Dest) }

// Append encodes m onto b. A destination that is empty or longer than
// MaxBeginDest is a programming error (callers check with Valid) and
// panics.
func (m Begin) Append(b []byte) []byte {
	if !m.Valid() {
		panic("proto: BEGIN destination length out of range")
	}
	b = append(b, byte(len(m.Dest)))
	return append(b, m.Dest...)
}

// Valid reports whether m can be encoded.
func (m Begin) Valid() bool { return len(m.Dest) > 0 && len(m.Dest) <= MaxBeginDest }
