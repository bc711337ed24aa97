package window

import "math/bits"

// bitset is a set of chunk numbers. It holds words from chunk off*64 on and
// grows on demand; trim drops the words below a chunk (a live stream's
// evicted past), and a chunk below the kept range reads as clear.
type bitset struct {
	off uint64 // first word held
	w   []uint64
}

func (s *bitset) get(i uint64) bool {
	wi := i / 64
	if wi < s.off || wi-s.off >= uint64(len(s.w)) {
		return false
	}
	return s.w[wi-s.off]&(1<<(i%64)) != 0
}

// word returns word wi (chunks wi*64 .. wi*64+63).
func (s *bitset) word(wi uint64) uint64 {
	if wi < s.off || wi-s.off >= uint64(len(s.w)) {
		return 0
	}
	return s.w[wi-s.off]
}

// set sets chunk i and reports whether it was clear. Chunks below the kept
// range are ignored.
func (s *bitset) set(i uint64) bool {
	wi := i / 64
	if wi < s.off {
		return false
	}
	for wi-s.off >= uint64(len(s.w)) {
		s.w = append(s.w, 0)
	}
	m := uint64(1) << (i % 64)
	was := s.w[wi-s.off]&m != 0
	s.w[wi-s.off] |= m
	return !was
}

// clear clears chunk i and reports whether it was set.
func (s *bitset) clear(i uint64) bool {
	wi := i / 64
	if wi < s.off || wi-s.off >= uint64(len(s.w)) {
		return false
	}
	m := uint64(1) << (i % 64)
	was := s.w[wi-s.off]&m != 0
	s.w[wi-s.off] &^= m
	return was
}

// trim forgets the words wholly below chunk i.
func (s *bitset) trim(i uint64) {
	wi := i / 64
	if wi <= s.off {
		return
	}
	n := min(wi-s.off, uint64(len(s.w)))
	s.w = append(s.w[:0], s.w[n:]...)
	s.off = wi
}

// nextClear returns the lowest chunk in [from, limit) set in neither a nor
// b, or limit.
func nextClear(a, b *bitset, from, limit uint64) uint64 {
	for i := from; i < limit; {
		wi := i / 64
		free := ^(a.word(wi) | b.word(wi)) >> (i % 64)
		if free != 0 {
			return min(i+uint64(bits.TrailingZeros64(free)), limit)
		}
		i = (wi + 1) * 64
	}
	return limit
}

// nextSet returns the lowest chunk in [from, limit) set in a, or limit.
func nextSet(a *bitset, from, limit uint64) uint64 {
	for i := from; i < limit; {
		wi := i / 64
		w := a.word(wi) >> (i % 64)
		if w != 0 {
			return min(i+uint64(bits.TrailingZeros64(w)), limit)
		}
		i = (wi + 1) * 64
	}
	return limit
}

// count returns how many chunks in [from, limit) are set.
func (s *bitset) count(from, limit uint64) uint64 {
	var n uint64
	for i := from; i < limit; {
		wi := i / 64
		w := s.word(wi) >> (i % 64)
		span := min(64-i%64, limit-i)
		if span < 64 {
			w &= 1<<span - 1
		}
		n += uint64(bits.OnesCount64(w))
		i += span
	}
	return n
}

func leadingZeros(x uint64) int { return bits.LeadingZeros64(x) }
