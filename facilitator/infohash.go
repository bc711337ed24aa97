package facilitator

import (
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// InfoHashSize is the size of a BitTorrent v1 infohash: the SHA-1 of the
// bencoded info dictionary.
const InfoHashSize = 20

// InfoHash names a BitTorrent v1 torrent. It is also the hash_name under
// which the requester asks for the content.
type InfoHash [InfoHashSize]byte

// String gives the 40 lowercase hex digits.
func (h InfoHash) String() string { return hex.EncodeToString(h[:]) }

// ErrInfoHash is wrapped by every infohash parsing error.
var ErrInfoHash = errors.New("facilitator: bad infohash")

// ParseInfoHash reads an infohash written as 40 hex digits or as 32 base32
// characters (RFC 4648, the older magnet form), in either case.
func ParseInfoHash(s string) (InfoHash, error) {
	var h InfoHash
	switch len(s) {
	case 2 * InfoHashSize:
		if _, err := hex.Decode(h[:], []byte(s)); err != nil {
			return InfoHash{}, fmt.Errorf("%w: %q is not hex: %v", ErrInfoHash, s, err)
		}
	case 32:
		n, err := base32.StdEncoding.Decode(h[:], []byte(strings.ToUpper(s)))
		if err != nil || n != InfoHashSize {
			return InfoHash{}, fmt.Errorf("%w: %q is not base32: %v", ErrInfoHash, s, err)
		}
	default:
		return InfoHash{}, fmt.Errorf("%w: %d characters, want 40 hex or 32 base32", ErrInfoHash, len(s))
	}
	return h, nil
}
