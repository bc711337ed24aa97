package content

import (
	"crypto/ed25519"
	"fmt"

	"veil/proto"
)

// LiveWriter is a live publisher's tree: it appends chunks and signs heads.
// Not safe for concurrent use.
type LiveWriter struct {
	priv ed25519.PrivateKey
	name proto.HashName
	tree Builder
}

// NewLiveWriter starts an empty stream named name (the hash_name of its
// live descriptor). onNode and keepSpan are passed to the Builder.
func NewLiveWriter(priv ed25519.PrivateKey, name proto.HashName, keepSpan uint64, onNode func(Node)) *LiveWriter {
	return &LiveWriter{priv: priv, name: name, tree: Builder{KeepSpan: keepSpan, OnNode: onNode}}
}

// Len is the number of chunks appended.
func (w *LiveWriter) Len() uint64 { return w.tree.Len() }

// Append adds a full chunk appended at ts (unix seconds) and returns its leaf.
func (w *LiveWriter) Append(ts uint32, chunk []byte) (Hash, error) {
	if len(chunk) != ChunkSize {
		return Hash{}, fmt.Errorf("%w: live chunk of %d bytes", ErrBadChunk, len(chunk))
	}
	if w.tree.Len() >= MaxChunks {
		return Hash{}, fmt.Errorf("%w: live stream full", ErrTooLarge)
	}
	h := LiveLeafHash(ts, chunk)
	w.tree.Append(h)
	return h, nil
}

// Head signs the stream as it is now.
func (w *LiveWriter) Head(ts uint32) Head {
	return SignHead(w.priv, w.name, Head{Length: w.tree.Len(), Timestamp: ts, Root: w.tree.Root()})
}

// Peaks returns the current peaks (see Builder.Peaks).
func (w *LiveWriter) Peaks() []Node { return w.tree.Peaks() }

// ResumeLiveWriter continues a stream whose tree has the given peaks (see
// PeakSpans); the caller checks that they lead to its newest signed head.
func ResumeLiveWriter(priv ed25519.PrivateKey, name proto.HashName, peaks []Node, keepSpan uint64, onNode func(Node)) (*LiveWriter, error) {
	b, err := ResumeBuilder(peaks, keepSpan, onNode)
	if err != nil {
		return nil, err
	}
	return &LiveWriter{priv: priv, name: name, tree: *b}, nil
}

// Root is the root of the chunks appended so far.
func (w *LiveWriter) Root() Hash { return w.tree.Root() }
