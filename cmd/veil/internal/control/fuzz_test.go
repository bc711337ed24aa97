package control

import (
	"bufio"
	"encoding/hex"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// FuzzParseArgs: the argument parser never panics, and what it returns
// for quoted strings survives Quote and a second parse.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{`version`, `a=b c="d e" "f\"g"`, `"\101\n"`, `x="unterminated`, `"\777"`, `k=`, `=v`, `"a"b`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := ParseCommand(s); err != nil {
			return
		}
		as, err := ParseArgs(s)
		if err != nil {
			return
		}
		for _, a := range as {
			if !a.Quoted {
				continue
			}
			again, err := ParseArgs(Quote(a.Value))
			if err != nil || len(again) != 1 || again[0].Value != a.Value {
				t.Fatalf("%q: quoted value %q parses back as %+v, %v", s, a.Value, again, err)
			}
		}
	})
}

var (
	fuzzOnce   sync.Once
	fuzzServer *Server
	fuzzCookie string
	fuzzDir    string
)

// FuzzControlConn sends arbitrary bytes to the control port, before or
// after authenticating: every answer line is a 2xx, 5xx or 650 reply line
// or a data line, and the connection ends (no hang) once the input does.
func FuzzControlConn(f *testing.F) {
	for _, s := range []string{
		"GETINFO version\r\n", "PROTOCOLINFO 1\r\nAUTHCHALLENGE SAFECOOKIE 00\r\n",
		"GETINFO config/names circuit-status\r\nGETCONF Log nosuch\r\n",
		"SETEVENTS BW CIRC NOTICE\r\nSETCONF log_level=info\r\n", "+LOADCONF\r\nx\r\n.\r\nQUIT\r\n",
		"SIGNAL NEWNYM\r\nRESETCONF bridges\r\n", "AUTHENTICATE \"x\r\n", "\r\n\r\n\x00\xff\n",
		"TAKEOWNERSHIP\r\nSAVECONF FORCE\r\nDROPOWNERSHIP\r\n", "SETCONF exit.policy=\"accept *:80\"\r\nRESETCONF __OwningControllerProcess\r\n",
	} {
		f.Add(true, []byte(s))
		f.Add(false, []byte(s))
	}
	fuzzOnce.Do(func() {
		var err error
		if fuzzDir, err = os.MkdirTemp("", "veil-control-fuzz"); err != nil {
			f.Fatal(err)
		}
		fuzzServer, err = Start(Config{Listen: "127.0.0.1:0", DataDir: fuzzDir, Backend: newFakeNode(fuzzDir)})
		if err != nil {
			f.Fatal(err)
		}
		c, _ := ReadCookie(filepath.Dir(fuzzServer.CookiePath()))
		fuzzCookie = hex.EncodeToString(c)
	})
	f.Fuzz(func(t *testing.T, authed bool, data []byte) {
		if len(data) > 4*MaxLineLen {
			return
		}
		nc, err := net.Dial("tcp", fuzzServer.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			if authed {
				io.WriteString(nc, "AUTHENTICATE "+fuzzCookie+"\r\n")
			}
			nc.Write(data)
			nc.(*net.TCPConn).CloseWrite()
		}()
		r := bufio.NewReader(nc)
		inData := false
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				if l != "" || !isEOF(err) {
					t.Fatalf("input %q: read %q, %v", data, l, err)
				}
				return
			}
			l = strings.TrimSuffix(l, "\r\n")
			if inData {
				inData = l != "."
				continue
			}
			if len(l) < 4 || !strings.Contains("256", l[:1]) || !strings.Contains(" -+", l[3:4]) ||
				l[0] == '6' && l[:3] != "650" {
				t.Fatalf("input %q: reply line %q", data, l)
			}
			inData = l[3] == '+'
		}
	})
}

func isEOF(err error) bool {
	return err == io.EOF || strings.Contains(err.Error(), "connection reset")
}

// TestMain closes the fuzz server, which lives as long as the process.
func TestMain(m *testing.M) {
	code := m.Run()
	if fuzzServer != nil {
		fuzzServer.Close()
		os.RemoveAll(fuzzDir)
	}
	os.Exit(code)
}
