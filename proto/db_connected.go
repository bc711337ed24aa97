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
//
// A BitTorrent content (flag FlagTorrent, sent by a facilitator) has no
// publisher key, root or signature: its hash_name is the torrent's v1
// infohash, the SHA-1 of its bencoded info dictionary, which the
// descriptor carries instead so that the requester can check it and then
// every piece hash itself:
//
//	[size length 1B][size]                          total length of the files
//	[type length 1B][MIME type]
//	[public key length 1B = 0]
//	[flags 1B = FlagTorrent]
//	[info length 4B = 1..MaxTorrentInfo][bencoded info dictionary]
type DBConnected struct {
	Size      uint64
	Type      string
	PublicKey []byte // IdentityKeySize bytes
	Flags     uint8
	Root      []byte // empty or 32 bytes
	Created   uint64
	Signature []byte // SignatureSize bytes
	// Info is a torrent's bencoded info dictionary (FlagTorrent only).
	Info []byte
}

// Command returns RelayDBConnected.
func (DBConnected) Command() RelayCommand { return RelayDBConnected }

// Descriptor flags.
const (
	FlagLive             uint8 = 1 << 0 // an append-only live stream
	FlagTorrent          uint8 = 1 << 7 // a BitTorrent content, from a facilitator
	knownDescriptorFlags       = FlagLive | FlagTorrent
)

// MaxTorrentInfo bounds a torrent's info dictionary in a descriptor: it
// must fit one DB_* message.
const MaxTorrentInfo = MaxDBMessage - 64

// IsTorrent reports whether m describes a BitTorrent content.
func (m DBConnected) IsTorrent() bool { return m.Flags&FlagTorrent != 0 }

// RootSize is the size of a Merkle root in a descriptor.
const RootSize = TreeHashSize

// MaxMIMEType bounds the MIME type (it sits behind a one-byte length).
const MaxMIMEType = 255

// Len is the encoded size.
func (m DBConnected) Len() int {
	if m.IsTorrent() {
		return minimalUintLen(m.Size) + 1 + len(m.Type) + 1 + len(m.PublicKey) + 1 + 4 + len(m.Info)
	}
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
	if m.IsTorrent() {
		b = appendMinimalUint(b, m.Size)
		b = append(b, byte(len(m.Type)))
		b = append(b, m.Type...)
		b = append(b, byte(len(m.PublicKey)))
		b = append(b, m.PublicKey...)
		b = append(b, m.Flags)
		b = binary.BigEndian.AppendUint32(b, uint32(len(m.Info)))
		return append(b, m.Info...)
	}
	b = m.AppendSigned(b)
	b = append(b, byte(len(m.Signature)))
	return append(b, m.Signature...)
}

// Validate checks field sizes and values.
func (m DBConnected) Validate() error {
	if m.IsTorrent() {
		return m.validateTorrent()
	}
	switch {
	case len(m.Info) != 0:
		return fmt.Errorf("db_connected: %w: info dictionary without the torrent flag", ErrBadValue)
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

func (m DBConnected) validateTorrent() error {
	switch {
	case len(m.Type) > MaxMIMEType:
		return fmt.Errorf("db_connected: %w: MIME type of %d bytes", ErrTooLong, len(m.Type))
	case m.Flags != FlagTorrent:
		return fmt.Errorf("db_connected: %w: torrent with flags %#x", ErrBadValue, m.Flags)
	case len(m.PublicKey) != 0 || len(m.Root) != 0 || len(m.Signature) != 0 || m.Created != 0:
		return fmt.Errorf("db_connected: %w: torrent with a key, root, signature or time", ErrBadValue)
	case len(m.Info) == 0:
		return fmt.Errorf("db_connected: %w: torrent without its info dictionary", ErrBadLength)
	case len(m.Info) > MaxTorrentInfo:
		return fmt.Errorf("db_connected: %w: info dictionary of %d bytes > %d", ErrTooLong, len(m.Info), MaxTorrentInfo)
	}
	return checkMIME(m.Type)
}

func checkMIME(t string) error {
	for i := 0; i < len(t); i++ {
		if c := t[i]; c < 0x20 || c > 0x7e {
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
	if r.err == nil && m.Flags&FlagTorrent != 0 {
		n := r.uint32()
		if r.err == nil && (n == 0 || n > MaxTorrentInfo) {
			r.fail(fmt.Errorf("db_connected: %w: info dictionary of %d bytes", ErrBadLength, n))
		}
		m.Info = r.take(int(n))
		if err := r.end(); err != nil {
			return DBConnected{}, err
		}
		if err := m.Validate(); err != nil {
			return DBConnected{}, err
		}
		return m, nil
	}
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
