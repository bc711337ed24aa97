package control

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// AddrFile is where, in the data directory, a running node's control
// port writes the address it listens on.
const AddrFile = "control.addr"

// ReadAddr returns the control port address the node on dataDir wrote.
func ReadAddr(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, AddrFile))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// Client is a small controller: veil status uses it. It authenticates
// with SAFECOOKIE, so it never sends the cookie and knows the port
// belongs to the node that wrote it. Not safe for concurrent use.
type Client struct {
	nc net.Conn
	r  *bufio.Reader
}

// ErrReply is a reply that was not 250.
type ErrReply struct{ Lines []string }

func (e *ErrReply) Error() string { return "control port: " + strings.Join(e.Lines, " / ") }

// Dial connects to addr and authenticates with the cookie in dataDir.
func Dial(ctx context.Context, addr, dataDir string) (*Client, error) {
	cookie, err := ReadCookie(dataDir)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &Client{nc: nc, r: bufio.NewReaderSize(nc, MaxLineLen)}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	} else {
		nc.SetDeadline(time.Now().Add(30 * time.Second))
	}
	if err := c.authenticate(cookie); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

func (c *Client) authenticate(cookie []byte) error {
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	lines, err := c.Do("AUTHCHALLENGE SAFECOOKIE " + hex.EncodeToString(nonce))
	if err != nil {
		return err
	}
	var sh, sn string
	if _, err := fmt.Sscanf(lines[0], "AUTHCHALLENGE SERVERHASH=%64s SERVERNONCE=%64s", &sh, &sn); err != nil {
		return fmt.Errorf("control port: bad AUTHCHALLENGE reply %q", lines[0])
	}
	serverHash, err1 := hex.DecodeString(sh)
	serverNonce, err2 := hex.DecodeString(sn)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("control port: bad AUTHCHALLENGE reply %q", lines[0])
	}
	want, answer := SafeCookieHashes(cookie, nonce, serverNonce)
	if !hmac.Equal(serverHash, want) {
		return errors.New("control port: the port does not know this node's cookie (another program listens there?)")
	}
	_, err = c.Do("AUTHENTICATE " + hex.EncodeToString(answer))
	return err
}

// Do sends one command line and returns the reply's lines without their
// codes (data blocks joined into their line with "\n"); a reply other
// than 250 is an *ErrReply. Events are skipped.
func (c *Client) Do(line string) ([]string, error) {
	if strings.ContainsAny(line, "\r\n") {
		return nil, errors.New("control: command contains a line break")
	}
	if _, err := io.WriteString(c.nc, line+"\r\n"); err != nil {
		return nil, err
	}
	var out []string
	code := ""
	for {
		l, err := c.readLine()
		if err != nil {
			return nil, err
		}
		if len(l) < 4 {
			return nil, fmt.Errorf("control port: bad reply line %q", l)
		}
		if l[:3] == "650" {
			if l[3] == '+' {
				if _, err := c.readData(); err != nil {
					return nil, err
				}
			}
			continue
		}
		code = l[:3]
		text := l[4:]
		if l[3] == '+' {
			d, err := c.readData()
			if err != nil {
				return nil, err
			}
			text += "\n" + d
		}
		out = append(out, text)
		if l[3] == ' ' {
			break
		}
	}
	if code != "250" {
		return nil, &ErrReply{Lines: out}
	}
	return out, nil
}

func (c *Client) readLine() (string, error) {
	b, err := c.r.ReadSlice('\n')
	if err != nil {
		return "", fmt.Errorf("control port: %w", err)
	}
	return strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"), nil
}

func (c *Client) readData() (string, error) {
	var lines []string
	for n := 0; ; {
		l, err := c.readLine()
		if err != nil {
			return "", err
		}
		if l == "." {
			return strings.Join(lines, "\n"), nil
		}
		if n += len(l); n > 64<<20 {
			return "", errors.New("control port: data block too long")
		}
		lines = append(lines, strings.TrimPrefix(l, "."))
	}
}

// GetInfo asks for key and returns its value.
func (c *Client) GetInfo(key string) (string, error) {
	lines, err := c.Do("GETINFO " + key)
	if err != nil {
		return "", err
	}
	v, ok := strings.CutPrefix(lines[0], key+"=")
	if !ok {
		return "", fmt.Errorf("control port: reply %q is not for %s", lines[0], key)
	}
	return strings.TrimPrefix(v, "\n"), nil
}

// Close says QUIT and closes the connection.
func (c *Client) Close() error {
	c.Do("QUIT")
	return c.nc.Close()
}
