package facilitator

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"strings"

	"github.com/anacrolix/torrent/iplist"
)

// Blocklist limits: a PeerGuardian list of the whole IPv4 space in /32s
// would still parse, but a line longer than this is not a list line.
const (
	maxBlocklistLine   = 4 << 10
	maxBlocklistRanges = 4 << 20
)

// ErrBlocklist is wrapped by every blocklist parsing error.
var ErrBlocklist = errors.New("facilitator: bad blocklist")

// Blocklist is a set of IP ranges the facilitator never dials nor accepts
// data from. The zero value blocks nothing. It is read-only once built and
// safe for concurrent use.
type Blocklist struct {
	ranges []ipRange // sorted by first, not overlapping after merge
}

type ipRange struct {
	first, last netip.Addr
	desc        string
}

// ParseBlocklist reads a PeerGuardian text list ("P2P format"):
//
//	# comment
//	Some description:1.2.3.0-1.2.3.255
//
// The description may hold colons; the range follows the last one. Blank
// lines and lines starting with '#' or "//" are skipped. Both ends of a range
// must be the same family and in order. An error names the line.
func ParseBlocklist(r io.Reader) (*Blocklist, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1024), maxBlocklistLine)
	var bl Blocklist
	line := 0
	for sc.Scan() {
		line++
		rg, ok, err := parseBlocklistLine(sc.Bytes())
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrBlocklist, line, err)
		}
		if !ok {
			continue
		}
		if len(bl.ranges) >= maxBlocklistRanges {
			return nil, fmt.Errorf("%w: line %d: more than %d ranges", ErrBlocklist, line, maxBlocklistRanges)
		}
		bl.ranges = append(bl.ranges, rg)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%w: line %d: longer than %d bytes", ErrBlocklist, line+1, maxBlocklistLine)
		}
		return nil, fmt.Errorf("%w: reading line %d: %v", ErrBlocklist, line+1, err)
	}
	bl.sortMerge()
	return &bl, nil
}

func parseBlocklistLine(b []byte) (ipRange, bool, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] == '#' || bytes.HasPrefix(b, []byte("//")) {
		return ipRange{}, false, nil
	}
	colon := bytes.LastIndexByte(b, ':')
	// An IPv6 range has colons of its own: the range starts after the last
	// colon that is followed by something parsing as "addr-addr".
	for colon >= 0 {
		if rg, err := parseRange(string(b[colon+1:])); err == nil {
			rg.desc = string(b[:colon])
			return rg, true, nil
		}
		colon = bytes.LastIndexByte(b[:colon], ':')
	}
	return ipRange{}, false, fmt.Errorf("no \"description:first-last\" range in %q", truncateForError(b))
}

func parseRange(s string) (ipRange, error) {
	lo, hi, ok := strings.Cut(s, "-")
	if !ok {
		return ipRange{}, errors.New("no '-'")
	}
	a, err := netip.ParseAddr(strings.TrimSpace(lo))
	if err != nil {
		return ipRange{}, err
	}
	z, err := netip.ParseAddr(strings.TrimSpace(hi))
	if err != nil {
		return ipRange{}, err
	}
	a, z = a.Unmap(), z.Unmap()
	if a.Zone() != "" || z.Zone() != "" {
		return ipRange{}, errors.New("zoned address")
	}
	if a.Is4() != z.Is4() {
		return ipRange{}, errors.New("range mixes IPv4 and IPv6")
	}
	if z.Less(a) {
		return ipRange{}, errors.New("range ends before it starts")
	}
	return ipRange{first: a, last: z}, nil
}

func truncateForError(b []byte) []byte {
	if len(b) > 80 {
		return b[:80]
	}
	return b
}

// sortMerge orders the ranges and merges overlapping ones so that a lookup
// is one binary search.
func (bl *Blocklist) sortMerge() {
	sort.Slice(bl.ranges, func(i, j int) bool { return bl.ranges[i].first.Less(bl.ranges[j].first) })
	out := bl.ranges[:0]
	for _, r := range bl.ranges {
		if n := len(out); n > 0 && out[n-1].last.Is4() == r.first.Is4() &&
			!out[n-1].last.Less(r.first) {
			if out[n-1].last.Less(r.last) {
				out[n-1].last = r.last
			}
			continue
		}
		out = append(out, r)
	}
	bl.ranges = out
}

// Blocked reports whether addr is in a blocked range.
func (bl *Blocklist) Blocked(addr netip.Addr) bool {
	_, ok := bl.lookup(addr)
	return ok
}

func (bl *Blocklist) lookup(addr netip.Addr) (ipRange, bool) {
	if bl == nil || !addr.IsValid() {
		return ipRange{}, false
	}
	addr = addr.Unmap().WithZone("")
	// The first range starting after addr; the candidate is the one before.
	i := sort.Search(len(bl.ranges), func(i int) bool { return addr.Less(bl.ranges[i].first) })
	if i == 0 {
		return ipRange{}, false
	}
	r := bl.ranges[i-1]
	if r.first.Is4() != addr.Is4() || r.last.Less(addr) {
		return ipRange{}, false
	}
	return r, true
}

// Len is the number of ranges after merging.
func (bl *Blocklist) Len() int {
	if bl == nil {
		return 0
	}
	return len(bl.ranges)
}

// ranger adapts a Blocklist to anacrolix's iplist.Ranger, so the torrent
// client also drops blocked addresses it learns of by itself.
type ranger struct{ bl *Blocklist }

var _ iplist.Ranger = ranger{}

func (r ranger) Lookup(ip net.IP) (iplist.Range, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return iplist.Range{}, false
	}
	rg, ok := r.bl.lookup(a)
	if !ok {
		return iplist.Range{}, false
	}
	return iplist.Range{First: rg.first.AsSlice(), Last: rg.last.AsSlice(), Description: rg.desc}, true
}

func (r ranger) NumRanges() int { return r.bl.Len() }
