package facilitator

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// Limits on what a magnet link may carry, so that a hostile link cannot make
// the parser allocate without bound.
const (
	maxMagnetLen   = 16 << 10
	maxMagnetPeers = 200
	maxSelectIndex = 1 << 20
)

// ErrMagnet is wrapped by every magnet parsing error.
var ErrMagnet = errors.New("facilitator: bad magnet link")

// Magnet is what a magnet link (BEP 9) tells the facilitator.
//
// Trackers (tr) and web seeds (ws, xs, as) are kept only to be reported:
// the facilitator never contacts them, because an announce to a tracker
// publishes the facilitator as a peer of the torrent, and web seeds and
// metadata sources are HTTP servers outside the swarm.
type Magnet struct {
	InfoHash InfoHash
	// Name is the dn parameter, a display name only.
	Name string
	// Peers are the x.pe addresses: the only peers the link itself gives.
	// Host names are refused (resolving them would leak the content to the
	// resolver); only literal IP:port pairs are accepted.
	Peers []netip.AddrPort
	// Select are the file indices of BEP 53's so parameter, sorted and
	// without duplicates; nil means the whole torrent.
	Select []int
	// Ignored lists the trackers and web sources the link named.
	Ignored []string
}

// ParseTarget reads what a user or an ORDB gives to name a torrent: a magnet
// link or a bare infohash (40 hex or 32 base32 characters).
func ParseTarget(s string) (Magnet, error) {
	if strings.HasPrefix(strings.ToLower(s), "magnet:") {
		return ParseMagnet(s)
	}
	h, err := ParseInfoHash(s)
	if err != nil {
		return Magnet{}, err
	}
	return Magnet{InfoHash: h}, nil
}

// ParseMagnet reads a magnet:?xt=urn:btih:... link. It needs exactly one v1
// infohash; a v2-only link (urn:btmh) is refused since the facilitator and
// the requester's check use v1 piece hashes.
func ParseMagnet(s string) (Magnet, error) {
	if len(s) > maxMagnetLen {
		return Magnet{}, fmt.Errorf("%w: %d bytes, limit %d", ErrMagnet, len(s), maxMagnetLen)
	}
	const scheme = "magnet:?"
	if len(s) < len(scheme) || !strings.EqualFold(s[:len(scheme)], scheme) {
		return Magnet{}, fmt.Errorf("%w: does not start with %q", ErrMagnet, scheme)
	}
	q, err := url.ParseQuery(s[len(scheme):])
	if err != nil {
		return Magnet{}, fmt.Errorf("%w: query: %v", ErrMagnet, err)
	}
	var m Magnet
	var haveHash, sawV2 bool
	for _, xt := range q["xt"] {
		const v1, v2 = "urn:btih:", "urn:btmh:"
		switch {
		case len(xt) >= len(v1) && strings.EqualFold(xt[:len(v1)], v1):
			h, err := ParseInfoHash(xt[len(v1):])
			if err != nil {
				return Magnet{}, fmt.Errorf("%w: xt: %w", ErrMagnet, err)
			}
			if haveHash && h != m.InfoHash {
				return Magnet{}, fmt.Errorf("%w: two different btih infohashes", ErrMagnet)
			}
			m.InfoHash, haveHash = h, true
		case len(xt) >= len(v2) && strings.EqualFold(xt[:len(v2)], v2):
			sawV2 = true
		default:
			return Magnet{}, fmt.Errorf("%w: xt %q is not urn:btih", ErrMagnet, xt)
		}
	}
	if !haveHash {
		if sawV2 {
			return Magnet{}, fmt.Errorf("%w: v2-only link (urn:btmh) is not supported, need urn:btih", ErrMagnet)
		}
		return Magnet{}, fmt.Errorf("%w: no xt=urn:btih: parameter", ErrMagnet)
	}
	if dn := q["dn"]; len(dn) > 0 {
		m.Name = dn[0]
	}
	pe := q["x.pe"]
	if len(pe) > maxMagnetPeers {
		return Magnet{}, fmt.Errorf("%w: %d x.pe peers, limit %d", ErrMagnet, len(pe), maxMagnetPeers)
	}
	for _, p := range pe {
		ap, err := netip.ParseAddrPort(p)
		if err != nil {
			return Magnet{}, fmt.Errorf("%w: x.pe %q is not a literal IP:port: %v", ErrMagnet, p, err)
		}
		if ap.Port() == 0 {
			return Magnet{}, fmt.Errorf("%w: x.pe %q has port 0", ErrMagnet, p)
		}
		m.Peers = append(m.Peers, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	for _, so := range q["so"] {
		sel, err := parseSelectOnly(so)
		if err != nil {
			return Magnet{}, fmt.Errorf("%w: so %q: %v", ErrMagnet, so, err)
		}
		m.Select = append(m.Select, sel...)
	}
	m.Select = sortedUnique(m.Select)
	for _, k := range []string{"tr", "ws", "xs", "as"} {
		m.Ignored = append(m.Ignored, q[k]...)
	}
	return m, nil
}

// parseSelectOnly reads BEP 53's list of file indices and ranges: "0,2,4-6".
func parseSelectOnly(s string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := parseIndex(lo)
		if err != nil {
			return nil, err
		}
		b := a
		if isRange {
			if b, err = parseIndex(hi); err != nil {
				return nil, err
			}
			if b < a {
				return nil, fmt.Errorf("range %d-%d goes backwards", a, b)
			}
		}
		if len(out)+(b-a+1) > maxSelectIndex {
			return nil, fmt.Errorf("more than %d indices", maxSelectIndex)
		}
		for i := a; i <= b; i++ {
			out = append(out, i)
		}
	}
	return out, nil
}

func parseIndex(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n >= maxSelectIndex {
		return 0, fmt.Errorf("file index %q is not an integer in [0, %d)", s, maxSelectIndex)
	}
	return n, nil
}

func sortedUnique(xs []int) []int {
	if len(xs) == 0 {
		return nil
	}
	sort.Ints(xs)
	out := xs[:1]
	for _, x := range xs[1:] {
		if x != out[len(out)-1] {
			out = append(out, x)
		}
	}
	return out
}
