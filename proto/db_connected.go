package proto

import (
	"encoding/binary"
	"fmt"
)

// DBConnected is the answer to a DB_QUERY for chunk 0: the content's
// descriptor. The Peersm specification's three fields come first,
// byte-exact; veil appends what makes the descriptor verifiable:
//
//	[size length 1B][size, big-endian, minimal]     Peersm
//	[type length 1B][MIME type]                     Peersm
//	[public key length 1B][Ed25519 public key 32B]  Peersm (RSA modulus there)
//	[flags 1B]                                      veil: bit 0 = live stream
//	[root length 1B][Merkle root]                   veil: 0 or 32 bytes
//	[created 8B, unix seconds]                      veil
//	[signature length 1B][Ed25519 signature 64B]    veil
//
// The signature covers every byte before the signature length (SignedBytes).
// The hash_name of the content is the 160-bit hash of the whole encoding.
type DBConnected struct {
	Size      uint64
	Type      string
	PublicKey []byte // IdentityKeySize bytes
	Flags     uint8
	Root      []byte // empty or 32 bytes
	Created   uint64
	Signature []byte // SignatureSize bytes
}

// Command returns RelayDBConnected.
func (DBConnected) Command() RelayCommand { return RelayDBConnected }

// Descriptor flags.
const (
	FlagLive             uint8 = 1 << 0 // an append-only live stream
	knownDescriptorFlags       = FlagLive
)

// RootSize is the size of a Merkle root in a descriptor.
const RootSize = TreeHashSize

// MaxMIMEType bounds the MIME type (it sits behind a one-byte length).
const MaxMIMEType = 255

// Len is the encoded size.
func (m DBConnected) Len() int {
	return minimalUintLen(m.Size) + 1 + len(m.Type) + 1 + len(m.PublicKey) + 1 +
		1 + len(m.Root) + 8 + 1 + len(m.Signature)
}

// AppendSigned appends the bytes the signature covers.
func (m DBConnected) AppendSigned(b []byte) []byte {
	b = appendMinimalUint(b, m.Size)
	b = append(b, byte(len(m.Type)))
	b = append(b, m.Type...)
	b = append(b, byte(len(m.PublicKey)))
	b = append(b, m.PublicKey...)
	b = append(b, m.Flags, byte(len(m.Root)))
	b = append(b, m.Root...)
	return binary.BigEndian.AppendUint64(b, m.Created)
}

// Append encodes m onto b. Fields are assumed valid (see Validate).
func (m DBConnected) Append(b []byte) []byte {
	b = m.AppendSigned(b)
	b = append(b, byte(len(m.Signature)))
	return append(b, m.Signature...)
}

// Validate checks field sizes and values.
func (m DBConnected) Validate() error {
	switch {
	case len(m.Type) > MaxMIMEType:
		return fmt.Errorf("db_connected: %w: MIME type of %d bytes", ErrTooLong, len(m.Type))
	case len(m.PublicKey) != IdentityKeySize:
		return fmt.Errorf("db_connected: %w: public key of %d bytes, want %d", ErrBadLength, len(m.PublicKey), IdentityKeySize)
	case len(m.Root) != 0 && len(m.Root) != RootSize:
		return fmt.Errorf("db_connected: %w: root of %d bytes", ErrBadLength, len(m.Root))
	case len(m.Signature) != SignatureSize:
		return fmt.Errorf("db_connected: %w: signature of %d bytes, want %d", ErrBadLength, len(m.Signature), SignatureSize)
	case m.Flags&^knownDescriptorFlags != 0:
		return fmt.Errorf("db_connected: %w: unknown flags %#x", ErrBadValue, m.Flags)
	}
	for i := 0; i < len(m.Type); i++ {
		if c := m.Type[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("db_connected: %w: MIME type has byte %#x", ErrBadValue, c)
		}
	}
	return nil
}

// ParseDBConnected decodes a descriptor. Byte slices alias b.
func ParseDBConnected(b []byte) (DBConnected, error) {
	var m DBConnected
	r := reader{b: b, what: "db_connected"}
	m.Size = r.minimalUint(8, "size")
	m.Type = string(r.lenPrefixed(MaxMIMEType))
	m.PublicKey = r.lenPrefixed(IdentityKeySize)
	m.Flags = r.byte()
	m.Root = r.lenPrefixed(RootSize)
	m.Created = r.uint64()
	m.Signature = r.lenPrefixed(SignatureSize)
	if err := r.end(); err != nil {
		return DBConnected{}, err
	}
	if err := m.Validate(); err != nil {
		return DBConnected{}, err
	}
	return m, nil
}
