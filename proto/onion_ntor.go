package proto

// Sizes of the ntor handshake data (HDATA of CREATE2 and CREATED2 when
// HTYPE is HandshakeNtor).
const (
	// NtorAuthSize is AUTH, an HMAC-SHA256.
	NtorAuthSize = 32
	// NtorRequestSize is the client's HDATA: ID | B | X.
	NtorRequestSize = IDSize + 2*OnionKeySize
	// NtorReplySize is the server's HDATA: Y | AUTH.
	NtorReplySize = OnionKeySize + NtorAuthSize
)

// NtorRequest is the client's ntor HDATA, exactly NtorRequestSize bytes:
//
//	[ID 20B][B 32B][X 32B]
//
// ID and B name the node and the onion key the client expects; X is the
// client's ephemeral X25519 key.
type NtorRequest struct {
	ID NodeID
	B  [OnionKeySize]byte
	X  [OnionKeySize]byte
}

// ParseNtorRequest decodes a client's ntor HDATA exactly. Nothing aliases b.
func ParseNtorRequest(b []byte) (NtorRequest, error) {
	r := reader{b: b, what: "ntor request"}
	var m NtorRequest
	copy(m.ID[:], r.take(IDSize))
	copy(m.B[:], r.take(OnionKeySize))
	copy(m.X[:], r.take(OnionKeySize))
	if err := r.end(); err != nil {
		return NtorRequest{}, err
	}
	return m, nil
}

// Len is the encoded size.
func (NtorRequest) Len() int { return NtorRequestSize }

// Append encodes m onto b.
func (m NtorRequest) Append(b []byte) []byte {
	b = append(b, m.ID[:]...)
	b = append(b, m.B[:]...)
	return append(b, m.X[:]...)
}

// NtorReply is the server's ntor HDATA, exactly NtorReplySize bytes:
//
//	[Y 32B][AUTH 32B]
type NtorReply struct {
	Y    [OnionKeySize]byte
	Auth [NtorAuthSize]byte
}

// ParseNtorReply decodes a server's ntor HDATA exactly. Nothing aliases b.
func ParseNtorReply(b []byte) (NtorReply, error) {
	r := reader{b: b, what: "ntor reply"}
	var m NtorReply
	copy(m.Y[:], r.take(OnionKeySize))
	copy(m.Auth[:], r.take(NtorAuthSize))
	if err := r.end(); err != nil {
		return NtorReply{}, err
	}
	return m, nil
}

// Len is the encoded size.
func (NtorReply) Len() int { return NtorReplySize }

// Append encodes m onto b.
func (m NtorReply) Append(b []byte) []byte {
	b = append(b, m.Y[:]...)
	return append(b, m.Auth[:]...)
}
