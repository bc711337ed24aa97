package control_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"veil/cmd/veil/internal/control"
	"veil/cmd/veil/internal/node"
)

// A fetch at the node shows on its control port as STREAM events: each
// stream of the fetch is NEW, then SUCCEEDED, then CLOSED, on a circuit
// the port reported BUILT.
func TestFetchStreamEvents(t *testing.T) {
	n, others := testNetAll(t, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	nc, err := net.Dial("tcp", n.ControlAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(60 * time.Second))
	cookie, err := control.ReadCookie(n.DataDir())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(nc, "AUTHENTICATE %s\r\nSETEVENTS STREAM CIRC\r\n", hex.EncodeToString(cookie))
	lines := make(chan string, 4096)
	go func() {
		defer close(lines)
		r := bufio.NewReader(nc)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			lines <- strings.TrimSuffix(l, "\r\n")
		}
	}()

	publisher := others[1]
	waitFor(t, 30*time.Second, "the publisher's ORDB circuits", func() bool {
		st := publisher.Status(ctx)
		return st.ORDB != nil && len(st.ORDB.ORDBs) > 0
	})
	data := make([]byte, 50_000)
	rand.Read(data)
	pub, err := publisher.Publish(ctx, "application/octet-stream", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Fetch(ctx, pub.Name, func(node.Progress) {}); err != nil {
		t.Fatal(err)
	}

	built := map[string]bool{}
	status := map[string][]string{} // stream ID -> statuses in order
	circOf := map[string]string{}
	deadline := time.After(30 * time.Second)
	for done := false; !done; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("control connection closed")
			}
			f := strings.Fields(l)
			switch {
			case len(f) >= 4 && f[1] == "CIRC" && f[3] == "BUILT":
				built[f[2]] = true
			case len(f) >= 6 && f[1] == "STREAM":
				status[f[2]] = append(status[f[2]], f[3])
				circOf[f[2]] = f[4]
				if f[5] != "ordb.veil:0" {
					t.Errorf("stream target %q", f[5])
				}
			}
			// Done once some stream has closed and every stream seen
			// has closed or failed.
			done = len(status) > 0
			for _, s := range status {
				last := s[len(s)-1]
				done = done && (last == "CLOSED" || last == "FAILED")
			}
		case <-deadline:
			t.Fatalf("streams did not all close: %v", status)
		}
	}
	succeeded := 0
	for id, s := range status {
		if strings.Join(s, " ") == "NEW SUCCEEDED CLOSED" {
			succeeded++
			if !built[circOf[id]] {
				t.Errorf("stream %s on circuit %s, never reported BUILT", id, circOf[id])
			}
		} else if strings.Join(s, " ") != "NEW FAILED" {
			t.Errorf("stream %s: %v", id, s)
		}
	}
	if succeeded == 0 {
		t.Fatalf("no stream went NEW, SUCCEEDED, CLOSED: %v", status)
	}
}
