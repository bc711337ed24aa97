package node

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"veil/cmd/veil/internal/control"
)

// A SOCKS stream through an exit shows on the client's control port as
// STREAM NEW, SUCCEEDED (on a circuit) and CLOSED, with its target.
func TestSOCKSStreamEvents(t *testing.T) {
	needCurl(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	en := newExitNet(t, ctx, 10_000)

	nc, err := net.Dial("tcp", en.client.ControlAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(time.Minute))
	cookie, err := control.ReadCookie(en.client.DataDir())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(nc, "AUTHENTICATE %s\r\nSETEVENTS STREAM\r\n", hex.EncodeToString(cookie))
	r := bufio.NewReader(nc)
	for _, want := range []string{"250 OK", "250 OK"} {
		if l, err := r.ReadString('\n'); err != nil || strings.TrimSpace(l) != want {
			t.Fatalf("control port: %q %v", l, err)
		}
	}

	target := "127.0.0.1:" + en.port
	if got, stderr, code := runCurl(t, "--socks5-hostname", en.client.SOCKSAddr(), "http://"+target+"/file"); code != 0 || len(got) != len(en.file) {
		t.Fatalf("curl: exit %d, %d bytes: %s", code, len(got), stderr)
	}
	var seen []string
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", seen, err)
		}
		f := strings.Fields(l)
		if len(f) < 6 || f[1] != "STREAM" || f[5] != target {
			continue
		}
		seen = append(seen, f[2]+" "+f[3])
		if f[3] == "SUCCEEDED" && f[4] == "0" {
			t.Errorf("SUCCEEDED on no circuit: %s", l)
		}
		if f[3] == "CLOSED" || f[3] == "FAILED" {
			break
		}
	}
	id := strings.Fields(seen[0])[0]
	if want := id + " NEW," + id + " SUCCEEDED," + id + " CLOSED"; strings.Join(seen, ",") != want {
		t.Fatalf("stream events %q, want %q", seen, want)
	}
}
