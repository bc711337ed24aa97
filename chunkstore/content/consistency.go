package content

import (
	"errors"
	"fmt"
)

// ErrInconsistent: a longer head does not extend the shorter one (the
// publisher signed two different histories), or its consistency proof is
// malformed.
var ErrInconsistent = errors.New("content: heads are not consistent")

// MaxConsistencyHashes bounds a consistency proof (RFC 6962 proofs of
// trees up to MaxChunks leaves need at most 2*30).
const MaxConsistencyHashes = 64

// ConsistencyProof returns the RFC 6962 (section 2.1.2) consistency proof
// that the tree of the first m leaves is a prefix of the tree of n leaves,
// asking node for the subtree hashes of the n-leaf tree. 0 < m < n.
func ConsistencyProof(m, n uint64, node NodeFunc) ([]Hash, error) {
	if m == 0 || m >= n || n > MaxChunks {
		return nil, fmt.Errorf("%w: consistency of %d in %d leaves", ErrBadRange, m, n)
	}
	var out []Hash
	// sub is RFC 6962's SUBPROOF(m, D[a:b], whole).
	var sub func(m, a, b uint64, whole bool) error
	sub = func(m, a, b uint64, whole bool) error {
		if m == b-a {
			if whole {
				return nil
			}
			h, err := node(a, b)
			if err != nil {
				return err
			}
			out = append(out, h)
			return nil
		}
		k := split(b - a)
		if m <= k {
			if err := sub(m, a, a+k, whole); err != nil {
				return err
			}
			h, err := node(a+k, b)
			if err != nil {
				return err
			}
			out = append(out, h)
			return nil
		}
		if err := sub(m-k, a+k, b, false); err != nil {
			return err
		}
		h, err := node(a, a+k)
		if err != nil {
			return err
		}
		out = append(out, h)
		return nil
	}
	if err := sub(m, 0, n, true); err != nil {
		return nil, fmt.Errorf("consistency proof %d..%d: %w", m, n, err)
	}
	return out, nil
}

// VerifyConsistency checks that rootN, the root of a tree of n leaves,
// extends rootM, the root of its first m leaves, using proof (from
// ConsistencyProof), as RFC 9162 section 2.1.4.2 verifies it. m == 0
// needs no proof (every tree extends the empty one); m == n needs equal
// roots and no proof.
func VerifyConsistency(m, n uint64, rootM, rootN Hash, proof []Hash) error {
	switch {
	case n > MaxChunks || m > n:
		return fmt.Errorf("%w: %d leaves then %d", ErrInconsistent, m, n)
	case len(proof) > MaxConsistencyHashes:
		return fmt.Errorf("%w: %d hashes", ErrInconsistent, len(proof))
	case m == 0:
		return nil
	case m == n:
		if len(proof) != 0 || rootM != rootN {
			return fmt.Errorf("%w: two roots for %d leaves", ErrInconsistent, n)
		}
		return nil
	case len(proof) == 0:
		return fmt.Errorf("%w: empty proof for %d..%d", ErrInconsistent, m, n)
	}
	if m&(m-1) == 0 {
		// m is a power of two: the old tree is a node of the new one.
		proof = append([]Hash{rootM}, proof...)
	}
	fn, sn := m-1, n-1
	for fn&1 == 1 {
		fn >>= 1
		sn >>= 1
	}
	fr, sr := proof[0], proof[0]
	for _, c := range proof[1:] {
		if sn == 0 {
			return fmt.Errorf("%w: proof too long", ErrInconsistent)
		}
		if fn&1 == 1 || fn == sn {
			fr, sr = ParentHash(c, fr), ParentHash(c, sr)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			sr = ParentHash(sr, c)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 || fr != rootM || sr != rootN {
		return fmt.Errorf("%w: %d leaves do not extend to %d", ErrInconsistent, m, n)
	}
	return nil
}
