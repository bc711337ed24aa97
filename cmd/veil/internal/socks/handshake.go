// Package socks is veil's SOCKS server (127.0.0.1:7750 by default):
// SOCKS5 (RFC 1928) CONNECT with a domain name, an IPv4 or an IPv6
// address, with no authentication or username/password (RFC 1929), and
// SOCKS4 and SOCKS4a CONNECT. The client never resolves a name: names go
// as they are to whoever serves them. A username and password are not
// checked: they are the stream's isolation key, as Tor's
// IsolateSOCKSAuth makes them, so streams with different credentials
// never share a circuit.
//
// Wire layouts (client to server unless said):
//
//	SOCKS5 greeting:   [5][NMETHODS][METHODS...]
//	  server:          [5][METHOD]          0x00 none, 0x02 user/pass, 0xFF none acceptable
//	RFC 1929:          [1][ULEN][UNAME][PLEN][PASSWD]
//	  server:          [1][0]
//	SOCKS5 request:    [5][CMD][0][ATYP][DST.ADDR][DST.PORT 2B]
//	                   ATYP 1: 4 bytes; 3: [LEN][name]; 4: 16 bytes
//	  server:          [5][REP][0][1][0.0.0.0][0 0]
//	SOCKS4(a) request: [4][CMD][DST.PORT 2B][DST.IP 4B][USERID...][0]
//	                   SOCKS4a: DST.IP 0.0.0.x (x != 0), then [HOST...][0]
//	  server:          [0][0x5A granted | 0x5B rejected][6 bytes]
package socks

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
)

// Protocol constants (RFC 1928, RFC 1929, SOCKS4).
const (
	version4 = 4
	version5 = 5

	methodNone     = 0x00
	methodUserPass = 0x02
	methodNoneOK   = 0xFF

	cmdConnect = 1

	atypIPv4   = 1
	atypDomain = 3
	atypIPv6   = 4

	authVersion = 1

	socks4Granted  = 0x5A
	socks4Rejected = 0x5B
)

// SOCKS5 reply codes (RFC 1928 section 6).
const (
	ReplySucceeded           byte = 0x00
	ReplyGeneralFailure      byte = 0x01
	ReplyNotAllowed          byte = 0x02
	ReplyNetworkUnreachable  byte = 0x03
	ReplyHostUnreachable     byte = 0x04
	ReplyConnectionRefused   byte = 0x05
	ReplyTTLExpired          byte = 0x06
	ReplyCommandNotSupported byte = 0x07
	ReplyAddressNotSupported byte = 0x08
)

// maxField bounds every variable field (names, user IDs, credentials):
// each has a one-byte length in SOCKS5, and SOCKS4's NUL-terminated ones
// are held to the same.
const maxField = 255

// Errors of the handshake.
var (
	ErrVersion   = errors.New("socks: unknown protocol version")
	ErrMethods   = errors.New("socks: no acceptable authentication method")
	ErrCommand   = errors.New("socks: command not supported (CONNECT only)")
	ErrAddrType  = errors.New("socks: address type not supported")
	ErrMalformed = errors.New("socks: malformed message")
)

// Request is a CONNECT a client asked for.
type Request struct {
	Version byte   // 4 or 5
	Host    string // a name or an IP literal, as the client gave it (never resolved here)
	Port    uint16
	// User and Password are the SOCKS5 RFC 1929 credentials, or the
	// SOCKS4 user ID in User: the isolation key, never checked.
	User, Password string
	atyp           byte // SOCKS5 address type, to re-encode
}

// Dest is "HOST:PORT" (IPv6 in brackets).
func (r Request) Dest() string { return net.JoinHostPort(r.Host, strconv.Itoa(int(r.Port))) }

// IsolationKey names the circuits the request's stream may share: equal
// for equal credentials and protocol versions only.
func (r Request) IsolationKey() string {
	return fmt.Sprintf("socks%d:%d:%s:%d:%s", r.Version, len(r.User), r.User, len(r.Password), r.Password)
}

// Handshake reads a client's greeting, authentication and request from r
// and answers the greeting and authentication on w. It does not answer
// the request: the caller does with WriteReply once it knows the outcome.
// On a request it cannot carry (another command, an unknown address type)
// it writes the failure reply itself and returns the error. It never
// reads past the request, so what follows in r is the stream's data.
func Handshake(r *bufio.Reader, w io.Writer) (Request, error) {
	v, err := r.ReadByte()
	if err != nil {
		return Request{}, truncated(err)
	}
	switch v {
	case version5:
		return handshake5(r, w)
	case version4:
		return handshake4(r, w)
	}
	return Request{}, fmt.Errorf("%w: %d", ErrVersion, v)
}

func truncated(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func readN(r *bufio.Reader, n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, truncated(err)
	}
	return b, nil
}

// readLen reads a one-byte length and that many bytes.
func readLen(r *bufio.Reader) ([]byte, error) {
	n, err := r.ReadByte()
	if err != nil {
		return nil, truncated(err)
	}
	return readN(r, int(n))
}

func handshake5(r *bufio.Reader, w io.Writer) (Request, error) {
	req := Request{Version: version5}
	methods, err := readLen(r)
	if err != nil {
		return req, err
	}
	method := byte(methodNoneOK)
	for _, m := range methods {
		if m == methodUserPass {
			method = methodUserPass // preferred: it carries an isolation key
		} else if m == methodNone && method == methodNoneOK {
			method = methodNone
		}
	}
	if _, err := w.Write([]byte{version5, method}); err != nil {
		return req, err
	}
	if method == methodNoneOK {
		return req, ErrMethods
	}
	if method == methodUserPass {
		v, err := r.ReadByte()
		if err != nil {
			return req, truncated(err)
		}
		if v != authVersion {
			return req, fmt.Errorf("%w: username/password version %d", ErrMalformed, v)
		}
		user, err := readLen(r)
		if err != nil {
			return req, err
		}
		pass, err := readLen(r)
		if err != nil {
			return req, err
		}
		req.User, req.Password = string(user), string(pass)
		if _, err := w.Write([]byte{authVersion, 0}); err != nil {
			return req, err
		}
	}
	hdr, err := readN(r, 4)
	if err != nil {
		return req, err
	}
	if hdr[0] != version5 || hdr[2] != 0 {
		return req, fmt.Errorf("%w: request header % x", ErrMalformed, hdr)
	}
	req.atyp = hdr[3]
	switch hdr[3] {
	case atypIPv4:
		b, err := readN(r, 4)
		if err != nil {
			return req, err
		}
		req.Host = netip.AddrFrom4([4]byte(b)).String()
	case atypIPv6:
		b, err := readN(r, 16)
		if err != nil {
			return req, err
		}
		req.Host = netip.AddrFrom16([16]byte(b)).String()
	case atypDomain:
		b, err := readLen(r)
		if err != nil {
			return req, err
		}
		if len(b) == 0 {
			WriteReply(w, req, ReplyHostUnreachable)
			return req, fmt.Errorf("%w: empty host name", ErrMalformed)
		}
		req.Host = string(b)
	default:
		WriteReply(w, req, ReplyAddressNotSupported)
		return req, fmt.Errorf("%w: %d", ErrAddrType, hdr[3])
	}
	p, err := readN(r, 2)
	if err != nil {
		return req, err
	}
	req.Port = uint16(p[0])<<8 | uint16(p[1])
	if hdr[1] != cmdConnect {
		WriteReply(w, req, ReplyCommandNotSupported)
		return req, fmt.Errorf("%w: command %d", ErrCommand, hdr[1])
	}
	return req, nil
}

// readCString reads a NUL-terminated string of at most maxField bytes.
func readCString(r *bufio.Reader) (string, error) {
	var b []byte
	for {
		c, err := r.ReadByte()
		if err != nil {
			return "", truncated(err)
		}
		if c == 0 {
			return string(b), nil
		}
		if len(b) == maxField {
			return "", fmt.Errorf("%w: SOCKS4 field over %d bytes", ErrMalformed, maxField)
		}
		b = append(b, c)
	}
}

func handshake4(r *bufio.Reader, w io.Writer) (Request, error) {
	req := Request{Version: version4}
	hdr, err := readN(r, 7)
	if err != nil {
		return req, err
	}
	cmd := hdr[0]
	req.Port = uint16(hdr[1])<<8 | uint16(hdr[2])
	ip := [4]byte(hdr[3:7])
	if req.User, err = readCString(r); err != nil {
		return req, err
	}
	if ip[0] == 0 && ip[1] == 0 && ip[2] == 0 && ip[3] != 0 { // SOCKS4a
		if req.Host, err = readCString(r); err != nil {
			return req, err
		}
		if req.Host == "" {
			WriteReply(w, req, ReplyHostUnreachable)
			return req, fmt.Errorf("%w: empty SOCKS4a host name", ErrMalformed)
		}
	} else {
		req.Host = netip.AddrFrom4(ip).String()
	}
	if cmd != cmdConnect {
		WriteReply(w, req, ReplyCommandNotSupported)
		return req, fmt.Errorf("%w: command %d", ErrCommand, cmd)
	}
	return req, nil
}

// WriteReply answers req with a SOCKS5 reply code (SOCKS4 has only
// granted, for ReplySucceeded, and rejected).
func WriteReply(w io.Writer, req Request, code byte) error {
	var b []byte
	if req.Version == version4 {
		cd := byte(socks4Granted)
		if code != ReplySucceeded {
			cd = socks4Rejected
		}
		b = []byte{0, cd, 0, 0, 0, 0, 0, 0}
	} else {
		b = []byte{version5, code, 0, atypIPv4, 0, 0, 0, 0, 0, 0}
	}
	_, err := w.Write(b)
	return err
}

// AppendRequest encodes req as a client sends it (greeting, credentials
// if any, request), for tests and the fuzz target.
func AppendRequest(b []byte, req Request) []byte {
	if req.Version == version4 {
		b = append(b, version4, cmdConnect, byte(req.Port>>8), byte(req.Port))
		a, err := netip.ParseAddr(req.Host)
		if err == nil && a.Is4() && !isSOCKS4aMarker(a) {
			v := a.As4()
			b = append(b, v[:]...)
			b = append(append(b, req.User...), 0)
			return b
		}
		b = append(b, 0, 0, 0, 1)
		b = append(append(b, req.User...), 0)
		return append(append(b, req.Host...), 0)
	}
	if req.User != "" || req.Password != "" {
		b = append(b, version5, 1, methodUserPass, authVersion, byte(len(req.User)))
		b = append(b, req.User...)
		b = append(b, byte(len(req.Password)))
		b = append(b, req.Password...)
	} else {
		b = append(b, version5, 1, methodNone)
	}
	b = append(b, version5, cmdConnect, 0)
	a, err := netip.ParseAddr(req.Host)
	switch {
	case err == nil && a.Is4() && req.atyp != atypDomain:
		v := a.As4()
		b = append(append(b, atypIPv4), v[:]...)
	case err == nil && a.Is6() && req.atyp != atypDomain:
		v := a.As16()
		b = append(append(b, atypIPv6), v[:]...)
	default:
		b = append(b, atypDomain, byte(len(req.Host)))
		b = append(b, req.Host...)
	}
	return append(b, byte(req.Port>>8), byte(req.Port))
}

func isSOCKS4aMarker(a netip.Addr) bool {
	v := a.As4()
	return v[0] == 0 && v[1] == 0 && v[2] == 0 && v[3] != 0
}
