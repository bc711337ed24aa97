package control

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// CookieFile is the control cookie's name in the data directory.
const CookieFile = "control.cookie"

// CookieLen is the cookie's size, fixed by the protocol.
const CookieLen = 32

// The HMAC keys of SAFECOOKIE (control-spec §3.24).
const (
	serverHashKey = "Tor safe cookie authentication server-to-controller hash"
	clientHashKey = "Tor safe cookie authentication controller-to-server hash"
)

// writeCookie makes a fresh cookie and writes it to path, readable by
// the owner only. The file holds the raw 32 bytes, as Tor's does (stem
// and nyx read it raw).
func writeCookie(path string) ([CookieLen]byte, error) {
	var c [CookieLen]byte
	if _, err := rand.Read(c[:]); err != nil {
		return c, err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return c, fmt.Errorf("control cookie: %w", err)
	}
	if _, err := f.Write(c[:]); err != nil {
		f.Close()
		os.Remove(tmp)
		return c, fmt.Errorf("control cookie: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return c, fmt.Errorf("control cookie: %w", err)
	}
	return c, os.Rename(tmp, path)
}

// ReadCookie reads the cookie of the node whose data directory is dir.
func ReadCookie(dir string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(dir, CookieFile))
	if err != nil {
		return nil, err
	}
	if len(b) != CookieLen {
		return nil, fmt.Errorf("control cookie %s: %d bytes, want %d", filepath.Join(dir, CookieFile), len(b), CookieLen)
	}
	return b, nil
}

// SafeCookieHashes are the two HMACs of SAFECOOKIE over cookie, the
// controller's nonce and the server's nonce: what the server proves it
// knows (server) and what the controller answers (client).
func SafeCookieHashes(cookie, clientNonce, serverNonce []byte) (server, client []byte) {
	msg := make([]byte, 0, len(cookie)+len(clientNonce)+len(serverNonce))
	msg = append(append(append(msg, cookie...), clientNonce...), serverNonce...)
	mac := func(key string) []byte {
		h := hmac.New(sha256.New, []byte(key))
		h.Write(msg)
		return h.Sum(nil)
	}
	return mac(serverHashKey), mac(clientHashKey)
}

// ErrBadHashedPassword is the error of a hashed password not in Tor's form.
var ErrBadHashedPassword = errors.New(`control: hashed password is not "16:" and 58 hex digits`)

// s2kSpecifier is the RFC 2440 iterated-and-salted S2K specifier Tor
// hashes control passwords with: an 8-byte salt and a count byte.
type s2kSpecifier struct {
	salt  [8]byte
	count byte
}

func (s s2kSpecifier) hash(secret []byte) [sha1.Size]byte {
	n := (16 + int(s.count&15)) << ((s.count >> 4) + 6)
	buf := append(s.salt[:], secret...)
	h := sha1.New()
	for n > 0 {
		if n >= len(buf) {
			h.Write(buf)
			n -= len(buf)
		} else {
			h.Write(buf[:n])
			n = 0
		}
	}
	var out [sha1.Size]byte
	copy(out[:], h.Sum(nil))
	return out
}

// HashPassword returns password in Tor's HashedControlPassword form with
// a random salt and Tor's count (0x60: 65536 bytes hashed).
func HashPassword(password string) (string, error) {
	s := s2kSpecifier{count: 0x60}
	if _, err := rand.Read(s.salt[:]); err != nil {
		return "", err
	}
	h := s.hash([]byte(password))
	return "16:" + strings.ToUpper(hex.EncodeToString(append(append(s.salt[:], s.count), h[:]...))), nil
}

// CheckPassword reports whether password matches hashed, Tor's
// HashedControlPassword form.
func CheckPassword(hashed, password string) (bool, error) {
	hexPart, ok := strings.CutPrefix(hashed, "16:")
	raw, err := hex.DecodeString(hexPart)
	if !ok || err != nil || len(raw) != 8+1+sha1.Size {
		return false, ErrBadHashedPassword
	}
	var s s2kSpecifier
	copy(s.salt[:], raw[:8])
	s.count = raw[8]
	h := s.hash([]byte(password))
	return subtle.ConstantTimeCompare(h[:], raw[9:]) == 1, nil
}
