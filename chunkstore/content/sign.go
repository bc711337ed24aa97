package content

import (
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"

	"veil/proto"
)

// Signature contexts: a descriptor signature can never pass for a head's.
const (
	DescriptorContext = "veil/descriptor/v1\x00"
	HeadContext       = "veil/live-head/v1\x00"
)

// NewDescriptor builds and signs the descriptor of a static content of size
// bytes whose Merkle root is root.
func NewDescriptor(priv ed25519.PrivateKey, size uint64, mime string, root Hash, created uint64) (proto.DBConnected, error) {
	if ChunkCount(size) > MaxChunks {
		return proto.DBConnected{}, fmt.Errorf("%w: %d bytes", ErrTooLarge, size)
	}
	d := proto.DBConnected{
		Size: size, Type: mime, PublicKey: priv.Public().(ed25519.PublicKey),
		Root: root[:], Created: created,
	}
	return signDescriptor(priv, d)
}

// NewLiveDescriptor builds and signs the descriptor of a live stream: size
// 0, no root, FlagLive.
func NewLiveDescriptor(priv ed25519.PrivateKey, mime string, created uint64) (proto.DBConnected, error) {
	d := proto.DBConnected{
		Type: mime, PublicKey: priv.Public().(ed25519.PublicKey),
		Flags: proto.FlagLive, Created: created,
	}
	return signDescriptor(priv, d)
}

func signDescriptor(priv ed25519.PrivateKey, d proto.DBConnected) (proto.DBConnected, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return d, fmt.Errorf("%w: private key of %d bytes", ErrBadDescriptor, len(priv))
	}
	msg := d.AppendSigned([]byte(DescriptorContext))
	d.Signature = ed25519.Sign(priv, msg)
	if err := CheckDescriptor(d); err != nil {
		return proto.DBConnected{}, err
	}
	return d, nil
}

// CheckDescriptor validates d's fields for its kind and its signature.
func CheckDescriptor(d proto.DBConnected) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrBadDescriptor, err)
	}
	if d.Flags&proto.FlagLive != 0 {
		if d.Size != 0 || len(d.Root) != 0 {
			return fmt.Errorf("%w: live stream with a size or a root", ErrBadDescriptor)
		}
	} else {
		if len(d.Root) != HashSize {
			return fmt.Errorf("%w: static content without a root", ErrBadDescriptor)
		}
		if ChunkCount(d.Size) > MaxChunks {
			return fmt.Errorf("%w: %w: %d bytes", ErrBadDescriptor, ErrTooLarge, d.Size)
		}
	}
	msg := d.AppendSigned([]byte(DescriptorContext))
	if !ed25519.Verify(d.PublicKey, msg, d.Signature) {
		return fmt.Errorf("descriptor: %w", ErrBadSignature)
	}
	return nil
}

// HashNameOf is the hash_name of a descriptor: the first 20 bytes of
// SHA-256 over its full encoding.
func HashNameOf(d proto.DBConnected) proto.HashName {
	sum := sha256.Sum256(d.Append(nil))
	var h proto.HashName
	copy(h[:], sum[:])
	return h
}

// RootOfDescriptor returns a static descriptor's root.
func RootOfDescriptor(d proto.DBConnected) Hash {
	var h Hash
	copy(h[:], d.Root)
	return h
}

func headMessage(name proto.HashName, h Head) []byte {
	b := make([]byte, 0, len(HeadContext)+proto.IDSize+8+4+HashSize)
	b = append(b, HeadContext...)
	return h.AppendSigned(b, name)
}

// SignHead signs a live stream's head; name binds it to one stream.
func SignHead(priv ed25519.PrivateKey, name proto.HashName, h Head) Head {
	copy(h.Signature[:], ed25519.Sign(priv, headMessage(name, h)))
	return h
}

// CheckHead verifies a head against the stream's publisher key.
func CheckHead(pub ed25519.PublicKey, name proto.HashName, h Head) error {
	if h.Length > MaxChunks {
		return fmt.Errorf("%w: head length %d", ErrTooLarge, h.Length)
	}
	if h.Length == 0 && h.Root != EmptyRoot {
		return fmt.Errorf("%w: empty head with a root", ErrBadSignature)
	}
	if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, headMessage(name, h), h.Signature[:]) {
		return fmt.Errorf("live head: %w", ErrBadSignature)
	}
	return nil
}

// Stamp is DB_DATA's 8-byte "signature" field: a timestamp and a tag.
// veil fills the timestamp as the Peersm specification asks (a static
// content's creation time, or the second a live chunk was appended, which
// its leaf hash authenticates) and the tag with the first 4 bytes of the
// signature that anchors the chunk (the descriptor's, or the head's the
// proof carries). Only the live timestamp is verified; the tag is a hint.
// The fields are proto.DBData's Timestamp and Tag. All chunks of one
// DB_DATA share a stamp, so a live server splits DB_DATA where the
// timestamp changes.
type Stamp struct {
	Timestamp uint32
	Tag       [4]byte
}

// StaticStamp is the stamp of every chunk of a static content.
func StaticStamp(d proto.DBConnected) Stamp {
	s := Stamp{Timestamp: uint32(d.Created)}
	copy(s.Tag[:], d.Signature)
	return s
}

// LiveStamp is the stamp of a live chunk appended at ts, proved by head.
func LiveStamp(ts uint32, head Head) Stamp {
	s := Stamp{Timestamp: ts}
	copy(s.Tag[:], head.Signature[:])
	return s
}
