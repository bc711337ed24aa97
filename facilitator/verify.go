package facilitator

import (
	"bytes"
	"crypto/sha1"
	"errors"
	"fmt"
	"strings"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
)

// Limits on an info dictionary, checked before anything is allocated from
// it. 16 MiB holds the piece hashes of a 10 TB torrent with 16 MiB pieces.
const (
	MaxInfoBytes   = 16 << 20
	maxPieceLength = 1 << 28
	maxFiles       = 1 << 20
)

// Errors of the requester's end-to-end check. They are what a requester
// sees when a facilitator (or an ORDB in between) changed the bytes.
var (
	ErrInfoHashMismatch = errors.New("facilitator: info dictionary does not hash to the infohash")
	ErrBadInfo          = errors.New("facilitator: bad info dictionary")
	ErrPieceIndex       = errors.New("facilitator: piece index out of range")
	ErrPieceLength      = errors.New("facilitator: piece has the wrong length")
	ErrPieceHash        = errors.New("facilitator: piece does not match its SHA-1")
)

// Info is a checked v1 info dictionary: the piece hashes and file layout the
// requester verifies the relayed content against. Build it with VerifyInfo.
// It is read-only and safe for concurrent use.
type Info struct {
	hash        InfoHash
	raw         []byte
	name        string
	pieceLength int64
	totalLength int64
	pieces      []byte // 20 bytes per piece
	files       []File
}

// File is one file of a torrent, at its place in the concatenated content.
type File struct {
	Index  int
	Path   string // slash-separated, relative, as the torrent names it
	Offset int64
	Length int64
}

// VerifyInfo is the requester's end-to-end check of the metadata: it hashes
// infoBytes (SHA-1 of the bencoded info dictionary, BitTorrent v1) against
// ih and then decodes and checks the layout. A facilitator cannot forge an
// Info that passes it for another torrent without a SHA-1 second preimage.
func VerifyInfo(ih InfoHash, infoBytes []byte) (*Info, error) {
	if len(infoBytes) > MaxInfoBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrBadInfo, len(infoBytes), MaxInfoBytes)
	}
	if sha1.Sum(infoBytes) != ih {
		return nil, ErrInfoHashMismatch
	}
	return decodeInfo(ih, infoBytes)
}

func decodeInfo(ih InfoHash, infoBytes []byte) (*Info, error) {
	var mi metainfo.Info
	d := bencode.NewDecoder(bytes.NewReader(infoBytes))
	if err := d.Decode(&mi); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadInfo, err)
	}
	if d.ReadEOF() != nil {
		return nil, fmt.Errorf("%w: trailing bytes after the dictionary", ErrBadInfo)
	}
	if mi.PieceLength <= 0 || mi.PieceLength > maxPieceLength {
		return nil, fmt.Errorf("%w: piece length %d not in (0, %d]", ErrBadInfo, mi.PieceLength, maxPieceLength)
	}
	if len(mi.Pieces) == 0 || len(mi.Pieces)%sha1.Size != 0 {
		return nil, fmt.Errorf("%w: pieces field of %d bytes is not a non-empty multiple of 20 (v2-only torrents are not supported)", ErrBadInfo, len(mi.Pieces))
	}
	info := &Info{
		hash:        ih,
		raw:         infoBytes,
		name:        mi.BestName(),
		pieceLength: mi.PieceLength,
		pieces:      mi.Pieces,
	}
	if len(mi.Files) > maxFiles {
		return nil, fmt.Errorf("%w: %d files, limit %d", ErrBadInfo, len(mi.Files), maxFiles)
	}
	if len(mi.Files) == 0 {
		if mi.Length < 0 {
			return nil, fmt.Errorf("%w: negative length", ErrBadInfo)
		}
		info.files = []File{{Path: info.name, Length: mi.Length}}
		info.totalLength = mi.Length
	} else {
		for i, f := range mi.Files {
			if f.Length < 0 || info.totalLength+f.Length < info.totalLength {
				return nil, fmt.Errorf("%w: file %d has a bad length %d", ErrBadInfo, i, f.Length)
			}
			p := f.BestPath()
			for _, c := range p {
				if c == "" || c == "." || c == ".." || strings.ContainsAny(c, "/\x00") {
					return nil, fmt.Errorf("%w: file %d has an unsafe path %q", ErrBadInfo, i, p)
				}
			}
			info.files = append(info.files, File{Index: i, Path: strings.Join(p, "/"), Offset: info.totalLength, Length: f.Length})
			info.totalLength += f.Length
		}
	}
	want := (info.totalLength + info.pieceLength - 1) / info.pieceLength
	if int64(info.NumPieces()) != want {
		return nil, fmt.Errorf("%w: %d piece hashes for %d bytes in %d-byte pieces (want %d)",
			ErrBadInfo, info.NumPieces(), info.totalLength, info.pieceLength, want)
	}
	return info, nil
}

// InfoHash is the torrent's name.
func (in *Info) InfoHash() InfoHash { return in.hash }

// Bytes is the bencoded info dictionary the Info was checked from.
func (in *Info) Bytes() []byte { return in.raw }

// Name is the torrent's suggested name.
func (in *Info) Name() string { return in.name }

// PieceLength is the length of every piece but the last.
func (in *Info) PieceLength() int64 { return in.pieceLength }

// TotalLength is the length of the concatenated content.
func (in *Info) TotalLength() int64 { return in.totalLength }

// NumPieces is the number of pieces.
func (in *Info) NumPieces() int { return len(in.pieces) / sha1.Size }

// Files lists the files in torrent order; a single-file torrent has one.
func (in *Info) Files() []File { return append([]File(nil), in.files...) }

// PieceSize is the length of piece i (the last one may be shorter).
func (in *Info) PieceSize(i int) int64 {
	if i < 0 || i >= in.NumPieces() {
		return 0
	}
	if i == in.NumPieces()-1 {
		return in.totalLength - int64(i)*in.pieceLength
	}
	return in.pieceLength
}

// PieceRange gives the pieces [first, end) covering the bytes [off, off+n)
// of the content; n == 0 gives an empty range.
func (in *Info) PieceRange(off, n int64) (first, end int, err error) {
	if off < 0 || n < 0 || off > in.totalLength || n > in.totalLength-off {
		return 0, 0, fmt.Errorf("facilitator: byte range %d+%d outside the %d-byte content", off, n, in.totalLength)
	}
	if n == 0 {
		return 0, 0, nil
	}
	return int(off / in.pieceLength), int((off + n + in.pieceLength - 1) / in.pieceLength), nil
}

// FileByIndex returns file i.
func (in *Info) FileByIndex(i int) (File, error) {
	if i < 0 || i >= len(in.files) {
		return File{}, fmt.Errorf("facilitator: no file %d, the torrent has %d", i, len(in.files))
	}
	return in.files[i], nil
}

// FileByPath returns the file with this slash-separated path.
func (in *Info) FileByPath(p string) (File, error) {
	for _, f := range in.files {
		if f.Path == p {
			return f, nil
		}
	}
	return File{}, fmt.Errorf("facilitator: no file %q in the torrent", p)
}

// VerifyPiece is the requester's check of one relayed piece: it must have
// the piece's length and SHA-1. Call it before accepting a piece; neither
// the facilitator nor an ORDB relaying it can pass off other bytes.
func (in *Info) VerifyPiece(i int, data []byte) error {
	if i < 0 || i >= in.NumPieces() {
		return fmt.Errorf("%w: %d of %d", ErrPieceIndex, i, in.NumPieces())
	}
	if int64(len(data)) != in.PieceSize(i) {
		return fmt.Errorf("%w: piece %d has %d bytes, want %d", ErrPieceLength, i, len(data), in.PieceSize(i))
	}
	sum := sha1.Sum(data)
	if !bytes.Equal(sum[:], in.pieces[i*sha1.Size:(i+1)*sha1.Size]) {
		return fmt.Errorf("%w: piece %d", ErrPieceHash, i)
	}
	return nil
}
