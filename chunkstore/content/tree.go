package content

import "fmt"

// Node is a tree node: the hash of leaves [A, B).
type Node struct {
	A, B uint64
	Hash Hash
}

// Span is the number of leaves under the node.
func (n Node) Span() uint64 { return n.B - n.A }

// Builder computes the root of a growing sequence of leaves in O(log N)
// memory (the peaks: perfect subtrees of decreasing size). The zero value is
// an empty tree. Not safe for concurrent use.
type Builder struct {
	n     uint64
	peaks []Node

	// OnNode, if set, is called for every perfect subtree of at least
	// KeepSpan leaves as it completes; stores keep those so they can build
	// proofs without rereading every chunk.
	OnNode   func(Node)
	KeepSpan uint64
}

// Len is the number of leaves appended.
func (t *Builder) Len() uint64 { return t.n }

// Append adds the next leaf.
func (t *Builder) Append(leaf Hash) {
	cur := Node{A: t.n, B: t.n + 1, Hash: leaf}
	t.n++
	t.keep(cur)
	for len(t.peaks) > 0 {
		top := t.peaks[len(t.peaks)-1]
		if top.Span() != cur.Span() {
			break
		}
		t.peaks = t.peaks[:len(t.peaks)-1]
		cur = Node{A: top.A, B: cur.B, Hash: ParentHash(top.Hash, cur.Hash)}
		t.keep(cur)
	}
	t.peaks = append(t.peaks, cur)
}

func (t *Builder) keep(n Node) {
	if t.OnNode != nil && n.Span() >= max(t.KeepSpan, 1) {
		t.OnNode(n)
	}
}

// Root returns the root of the leaves so far, folding the peaks right to
// left. It also reports the right-edge nodes it builds to OnNode.
func (t *Builder) Root() Hash {
	if len(t.peaks) == 0 {
		return EmptyRoot
	}
	cur := t.peaks[len(t.peaks)-1]
	for i := len(t.peaks) - 2; i >= 0; i-- {
		p := t.peaks[i]
		cur = Node{A: p.A, B: cur.B, Hash: ParentHash(p.Hash, cur.Hash)}
		t.keep(cur)
	}
	return cur.Hash
}

// NodeFunc returns the hash of the node over leaves [a, b), or an error
// wrapping ErrNoNode if the caller cannot know it.
type NodeFunc func(a, b uint64) (Hash, error)

// BuildProof returns the proof hashes for leaves [lo, hi) of a tree of n
// leaves, asking node for each sibling.
func BuildProof(n, lo, hi uint64, node NodeFunc) ([]Hash, error) {
	if err := checkRange(n, lo, hi); err != nil {
		return nil, err
	}
	var out []Hash
	var walk func(a, b uint64) error
	walk = func(a, b uint64) error {
		if b <= lo || a >= hi {
			h, err := node(a, b)
			if err != nil {
				return fmt.Errorf("proof node [%d,%d): %w", a, b, err)
			}
			out = append(out, h)
			return nil
		}
		if a >= lo && b <= hi {
			return nil
		}
		k := split(b - a)
		if err := walk(a, a+k); err != nil {
			return err
		}
		return walk(a+k, b)
	}
	if err := walk(0, n); err != nil {
		return nil, err
	}
	return out, nil
}

func checkRange(n, lo, hi uint64) error {
	if n > MaxChunks {
		return fmt.Errorf("%w: %d chunks > %d", ErrTooLarge, n, uint64(MaxChunks))
	}
	if lo >= hi || hi > n {
		return fmt.Errorf("%w: [%d,%d) of %d chunks", ErrBadRange, lo, hi, n)
	}
	return nil
}

// VerifyRange checks leaves (the leaf hashes of chunks [lo, lo+len(leaves)))
// and the proof hashes against root, for a tree of n leaves. On success it
// returns the nodes it learned: every proof hash and every node it computed
// spanning at least keepSpan leaves (root included), so that the caller can
// later prove these chunks to others.
func VerifyRange(root Hash, n, lo uint64, leaves, proof []Hash, keepSpan uint64) ([]Node, error) {
	hi := lo + uint64(len(leaves))
	if err := checkRange(n, lo, hi); err != nil {
		return nil, err
	}
	if len(proof) > MaxProofHashes {
		return nil, fmt.Errorf("%w: %d hashes", ErrProofLong, len(proof))
	}
	var learned []Node
	used := 0
	var walk func(a, b uint64) (Hash, bool)
	walk = func(a, b uint64) (Hash, bool) {
		if b <= lo || a >= hi {
			if used >= len(proof) {
				return Hash{}, false
			}
			h := proof[used]
			used++
			learned = append(learned, Node{A: a, B: b, Hash: h})
			return h, true
		}
		if b-a == 1 {
			return leaves[a-lo], true
		}
		k := split(b - a)
		l, ok := walk(a, a+k)
		if !ok {
			return Hash{}, false
		}
		r, ok := walk(a+k, b)
		if !ok {
			return Hash{}, false
		}
		h := ParentHash(l, r)
		if b-a >= max(keepSpan, 2) {
			learned = append(learned, Node{A: a, B: b, Hash: h})
		}
		return h, true
	}
	got, ok := walk(0, n)
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: chunks [%d,%d) of %d", ErrProofShort, lo, hi, n)
	case used != len(proof):
		return nil, fmt.Errorf("%w: %d unused of %d", ErrProofLong, len(proof)-used, len(proof))
	case got != root:
		return nil, fmt.Errorf("%w: chunks [%d,%d) of %d", ErrRootMismatch, lo, hi, n)
	}
	return learned, nil
}

// MemTree is a whole tree held in memory as its leaves: what a test or a
// small publisher uses to build proofs. Building a proof costs O(N).
type MemTree []Hash

// Node returns the hash of [a, b); it is a NodeFunc.
func (m MemTree) Node(a, b uint64) (Hash, error) {
	if a >= b || b > uint64(len(m)) {
		return Hash{}, fmt.Errorf("%w: [%d,%d) of %d", ErrNoNode, a, b, len(m))
	}
	return nodeOf(m[a:b]), nil
}

// Root returns the root of the tree.
func (m MemTree) Root() Hash { return RootOf(m) }

// Peaks returns a copy of the current peaks: the perfect subtrees covering
// every leaf, largest first. They are the left siblings in the proof of any
// range that starts at Len().
func (t *Builder) Peaks() []Node { return append([]Node(nil), t.peaks...) }

// PeakSpans returns the spans [a, b) of the peaks of a tree of n leaves,
// largest first: the binary decomposition of n.
func PeakSpans(n uint64) [][2]uint64 {
	var out [][2]uint64
	var a uint64
	for bit := 63; bit >= 0; bit-- {
		if n&(1<<bit) != 0 {
			out = append(out, [2]uint64{a, a + 1<<bit})
			a += 1 << bit
		}
	}
	return out
}

// ResumeBuilder rebuilds a Builder from the peaks of a tree (as PeakSpans
// lays them out), so an appender can continue after a restart.
func ResumeBuilder(peaks []Node, keepSpan uint64, onNode func(Node)) (*Builder, error) {
	var n uint64
	for i, p := range peaks {
		span := p.Span()
		if p.A != n || span == 0 || span&(span-1) != 0 || (i > 0 && span >= peaks[i-1].Span()) {
			return nil, fmt.Errorf("%w: peak %d is [%d,%d)", ErrBadRange, i, p.A, p.B)
		}
		n = p.B
	}
	if n > MaxChunks {
		return nil, fmt.Errorf("%w: %d leaves", ErrTooLarge, n)
	}
	return &Builder{n: n, peaks: append([]Node(nil), peaks...), KeepSpan: keepSpan, OnNode: onNode}, nil
}
