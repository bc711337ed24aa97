package proto

// EndSize is the size of END and TRUNCATED relay data.
const EndSize = 1

// End is the data of an END relay cell (why a stream ended) and of a
// TRUNCATED relay cell (why the circuit lost its hops past the sender, a
// DestroyReason), exactly one byte:
//
//	[reason 1B]
//
// Every reason value is accepted: the numbering belongs to the layer that
// reads it.
type End struct {
	Reason uint8
}

// ParseEnd decodes END or TRUNCATED relay data exactly.
func ParseEnd(b []byte) (End, error) {
	r := reader{b: b, what: "end"}
	m := End{Reason: r.byte()}
	if err := r.end(); err != nil {
		return End{}, err
	}
	return m, nil
}

// Len is the encoded size.
func (End) Len() int { return EndSize }

// Append encodes m onto b.
func (m End) Append(b []byte) []byte { return append(b, m.Reason) }
