package gateway

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Guard is the defence of the node's HTTP server against the web pages
// its user visits. Such a page can make the browser send requests to
// 127.0.0.1 (an <img>, a <video>, a form, a fetch), and a page whose
// name its owner rebinds to 127.0.0.1 can even read the answers as its
// own. So the server:
//   - answers only requests whose Host is a loopback name or address
//     (localhost, 127.0.0.0/8, [::1], with any port): a rebound name
//     arrives with the attacker's name as Host;
//   - refuses requests a browser marks as coming from another site
//     (Sec-Fetch-Site cross-site or same-site) or whose Origin is not the
//     server itself, and sends no CORS header, so no other origin may
//     read an answer;
//   - wants the cookie (the CookieHeader header) for every /api/ call
//     and every request that is not GET or HEAD; a /content/ URL wants
//     the cookie or its capability token (?k=, see Token), because a
//     content request makes the node fetch: a page that does not know
//     the cookie cannot make the node publish, fetch or stop.
type Guard struct {
	Cookie string // the secret of the node's cookie file
	Header string // the header carrying it
}

// TokenParam is the query parameter of a content URL's capability token.
const TokenParam = "k"

// Token is the capability token for the content URL of hashName: an HMAC
// of the hash_name (as its 40 lower-case hex digits) keyed with the
// cookie. It unlocks that one content's URL and nothing else, so a URL
// handed to a player does not give away the cookie.
func Token(cookie, hashName string) string {
	m := hmac.New(sha256.New, []byte(cookie))
	m.Write([]byte("veil gateway content\x00"))
	m.Write([]byte(strings.ToLower(hashName)))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// Wrap returns h behind the guard.
func (g Guard) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := g.check(r); err != nil {
			code := http.StatusForbidden
			if errors.Is(err, errNoCookie) {
				code = http.StatusUnauthorized
			}
			writeError(w, code, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}

var (
	errHost      = errors.New("gateway: Host is not a loopback name or address (this server answers only local programs)")
	errCrossSite = errors.New("gateway: request from another site refused")
	errNoCookie  = errors.New("gateway: missing or wrong cookie: send the node's cookie file in its header (a content URL may carry its token instead)")
)

func (g Guard) check(r *http.Request) error {
	if !LoopbackHost(r.Host) {
		return errHost
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "cross-site", "same-site":
		return errCrossSite
	}
	if o := r.Header.Values("Origin"); len(o) > 0 && (len(o) > 1 || o[0] != "http://"+r.Host) {
		return errCrossSite
	}
	if g.hasCookie(r) {
		return nil
	}
	if rest, ok := strings.CutPrefix(r.URL.Path, ContentPrefix); ok {
		k := r.URL.Query().Get(TokenParam)
		if k != "" && subtle.ConstantTimeCompare([]byte(k), []byte(Token(g.Cookie, rest))) == 1 {
			return nil
		}
		return errNoCookie
	}
	if strings.HasPrefix(r.URL.Path, "/api/") || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return errNoCookie
	}
	return nil
}

func (g Guard) hasCookie(r *http.Request) bool {
	got := r.Header.Get(g.Header)
	return got != "" && g.Cookie != "" && subtle.ConstantTimeCompare([]byte(got), []byte(g.Cookie)) == 1
}

// LoopbackHost reports whether a Host field names this machine's
// loopback: localhost or a loopback address, with or without a port.
func LoopbackHost(host string) bool {
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.Zone() == "" && a.Unmap().IsLoopback()
}

func writeError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
