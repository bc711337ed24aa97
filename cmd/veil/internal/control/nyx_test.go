package control_test

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
)

// nyx, Tor's terminal monitor, runs against the control port in a
// pseudo-terminal for a few seconds; its debug log (which records every
// control message stem sent and received) shows no error.
func TestNyx(t *testing.T) {
	if _, err := exec.LookPath("nyx"); err != nil {
		t.Skip("needs nyx (Debian package nyx)")
	}
	if err := exec.Command("/usr/bin/python3", "-c", "import nyx").Run(); err != nil {
		t.Skip("needs nyx (Debian package nyx) importable by /usr/bin/python3")
	}
	n := testNet(t, 4)
	home := t.TempDir()
	logPath := filepath.Join(home, "nyx.log")
	cmd := exec.Command("/usr/bin/python3", "testdata/nyx_run.py", "--interface", n.ControlAddr(), "--debug", logPath)
	cmd.Env = append(os.Environ(), "HOME="+home, "TERM=xterm", "LANG=C.UTF-8")
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 120})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var screen bytes.Buffer
	drained := make(chan struct{})
	go func() { // nyx blocks if nobody reads its screen
		io.Copy(&screen, f)
		close(drained)
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	// Wait until nyx is attached and gets events, let it draw and poll
	// for a few seconds, then quit as a person would: q.
	attached := time.NewTicker(50 * time.Millisecond)
	defer attached.Stop()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(readFile(logPath), "Received from tor: 650 BW"); {
		select {
		case err := <-exited:
			f.Close()
			<-drained
			t.Fatalf("nyx exited early: %v\nlog:\n%s\nscreen:\n%s", err, readFile(logPath), screen.String())
		case <-attached.C:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("nyx did not attach in 30 s; log:\n%s", readFile(logPath))
		}
	}
	select {
	case err := <-exited:
		t.Fatalf("nyx exited early: %v\nlog:\n%s", err, readFile(logPath))
	case <-time.After(3 * time.Second):
	}
	f.Write([]byte("q"))
	select {
	case <-exited:
	case <-time.After(2 * time.Second):
		f.Write([]byte("q"))
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("nyx did not quit on q")
		}
	}
	f.Close()
	<-drained

	log := readFile(logPath)
	if !strings.Contains(log, "GETINFO version") || !strings.Contains(log, "650 BW") {
		t.Fatalf("nyx's log shows no talk with the control port:\n%s", log)
	}
	// nyx's header names the Tor version it is attached to.
	if !strings.Contains(screen.String(), "0.4.9.0-veil") {
		t.Errorf("nyx's screen does not show the version: %q", screen.String())
	}
	bad := regexp.MustCompile(`(?m)^.*\[(ERROR|WARN|WARNING)\].*$`).FindAllString(log, -1)
	for _, l := range bad {
		t.Errorf("nyx logged: %s", l)
	}
	if t.Failed() || os.Getenv("NYXLOG") != "" {
		t.Logf("nyx log:\n%s", log)
	}
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}
