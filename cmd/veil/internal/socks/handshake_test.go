package socks

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

func handshakeBytes(b []byte) (Request, []byte, error) {
	var out bytes.Buffer
	req, err := Handshake(bufio.NewReader(bytes.NewReader(b)), &out)
	return req, out.Bytes(), err
}

var validRequests = []Request{
	{Version: 5, Host: "0123456789abcdef0123456789abcdef01234567.veil", Port: 80},
	{Version: 5, Host: "example.com", Port: 443, User: "alice", Password: "secret"},
	{Version: 5, Host: "127.0.0.1", Port: 8080},
	{Version: 5, Host: "::1", Port: 8080, User: "u"},
	{Version: 4, Host: "10.1.2.3", Port: 22, User: "bob"},
	{Version: 4, Host: "localhost", Port: 80},
}

func TestHandshakeValid(t *testing.T) {
	for _, want := range validRequests {
		b := AppendRequest(nil, want)
		b = append(b, "GET / HTTP/1.1\r\n"...) // data after the request stays unread
		br := bufio.NewReader(bytes.NewReader(b))
		var out bytes.Buffer
		got, err := Handshake(br, &out)
		if err != nil {
			t.Fatalf("%+v: %v", want, err)
		}
		got.atyp = want.atyp
		if got != want {
			t.Fatalf("parsed %+v, want %+v", got, want)
		}
		rest, _ := io.ReadAll(br)
		if string(rest) != "GET / HTTP/1.1\r\n" {
			t.Fatalf("%+v: the handshake read into the stream: left %q", want, rest)
		}
		switch {
		case want.Version == 5 && want.User != "":
			if !bytes.Equal(out.Bytes(), []byte{5, 2, 1, 0}) {
				t.Fatalf("answers % x, want user/pass chosen and accepted", out.Bytes())
			}
		case want.Version == 5:
			if !bytes.Equal(out.Bytes(), []byte{5, 0}) {
				t.Fatalf("answers % x, want no auth chosen", out.Bytes())
			}
		default:
			if out.Len() != 0 {
				t.Fatalf("SOCKS4 greeting answered % x before the request's outcome", out.Bytes())
			}
		}
	}
}

// Every truncated prefix of a valid exchange is an error.
func TestHandshakeTruncated(t *testing.T) {
	for _, want := range validRequests {
		b := AppendRequest(nil, want)
		for n := range len(b) {
			if _, _, err := handshakeBytes(b[:n]); err == nil {
				t.Fatalf("%+v: prefix of %d/%d bytes accepted", want, n, len(b))
			}
		}
	}
}

func TestHandshakeRefusals(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    []byte
		err   error
		reply []byte // what the server wrote, in full
	}{
		{"version", []byte{6, 1, 0}, ErrVersion, nil},
		{"no acceptable method", []byte{5, 1, 0x80}, ErrMethods, []byte{5, 0xFF}},
		{"bind", []byte{5, 1, 0, 5, 2, 0, 1, 1, 2, 3, 4, 0, 80}, ErrCommand, []byte{5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"udp associate", []byte{5, 1, 0, 5, 3, 0, 1, 1, 2, 3, 4, 0, 80}, ErrCommand, []byte{5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"address type", []byte{5, 1, 0, 5, 1, 0, 9, 1, 2, 3, 4, 0, 80}, ErrAddrType, []byte{5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"reserved byte", []byte{5, 1, 0, 5, 1, 1, 1, 1, 2, 3, 4, 0, 80}, ErrMalformed, []byte{5, 0}},
		{"empty name", []byte{5, 1, 0, 5, 1, 0, 3, 0, 0, 80}, ErrMalformed, []byte{5, 0, 5, 4, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"auth version", []byte{5, 1, 2, 2, 0, 0}, ErrMalformed, []byte{5, 2}},
		{"socks4 bind", []byte{4, 2, 0, 80, 1, 2, 3, 4, 0}, ErrCommand, []byte{0, 0x5B, 0, 0, 0, 0, 0, 0}},
		{"socks4a empty name", []byte{4, 1, 0, 80, 0, 0, 0, 1, 0, 0}, ErrMalformed, []byte{0, 0x5B, 0, 0, 0, 0, 0, 0}},
		{"socks4 long user id", append(append([]byte{4, 1, 0, 80, 1, 2, 3, 4}, bytes.Repeat([]byte("u"), 256)...), 0), ErrMalformed, nil},
	} {
		_, out, err := handshakeBytes(tc.in)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
		}
		if !bytes.Equal(out, tc.reply) {
			t.Errorf("%s: wrote % x, want % x", tc.name, out, tc.reply)
		}
	}
}

func TestIsolationKey(t *testing.T) {
	a := Request{Version: 5, User: "a:b", Password: "c"}
	b := Request{Version: 5, User: "a", Password: "b:c"}
	if a.IsolationKey() == b.IsolationKey() {
		t.Fatal("different credentials give one isolation key")
	}
	if a.IsolationKey() != (Request{Version: 5, User: "a:b", Password: "c", Host: "x", Port: 1}).IsolationKey() {
		t.Fatal("the destination changed the isolation key")
	}
}

func TestVeilHost(t *testing.T) {
	h := "0123456789ABCDEF0123456789abcdef01234567"
	if _, ok, err := VeilHost(h + ".veil"); !ok || err != nil {
		t.Fatalf("%s.veil: %v %v", h, ok, err)
	}
	if _, ok, err := VeilHost(h + ".VEIL."); !ok || err != nil {
		t.Fatalf("upper case and a trailing dot: %v %v", ok, err)
	}
	if _, ok, err := VeilHost("abc.veil"); !ok || err == nil {
		t.Fatal("a short .veil name is no hash_name")
	}
	if _, ok, _ := VeilHost("example.com"); ok {
		t.Fatal("example.com taken for a .veil host")
	}
}

// FuzzHandshake: no input panics or reads without bound; a request that
// parses re-encodes to bytes that parse to the same request.
func FuzzHandshake(f *testing.F) {
	for _, r := range validRequests {
		f.Add(AppendRequest(nil, r))
	}
	f.Add([]byte{5, 1, 0, 5, 1, 0, 9})
	f.Add([]byte{4, 1, 0, 80, 0, 0, 0, 1, 'u', 0, 'h', 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		req, out, err := handshakeBytes(b)
		if len(out) > 16 {
			t.Fatalf("wrote %d bytes", len(out))
		}
		if err != nil {
			return
		}
		if len(req.Host) > maxField || len(req.User) > maxField || len(req.Password) > maxField {
			t.Fatalf("field over %d bytes: %+v", maxField, req)
		}
		again, _, err := handshakeBytes(AppendRequest(nil, req))
		if err != nil {
			t.Fatalf("%+v re-encoded does not parse: %v", req, err)
		}
		again.atyp = req.atyp
		if again != req {
			t.Fatalf("%+v re-encoded parses as %+v", req, again)
		}
	})
}
