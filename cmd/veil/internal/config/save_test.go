package config

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// A configuration written by WriteFile loads back the same, lists empty,
// nil or long, every key included; the write replaces the file whole and
// keeps its mode.
func TestWriteFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	if err := os.WriteFile(path, []byte("# a comment\nlog_level = \"info\"\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, false)
	if err != nil {
		t.Fatal(err)
	}
	c.Bridges = []string{"0123456789abcdef0123456789abcdef01234567@127.0.0.1:7700", "89abcdef0123456789abcdef0123456789abcdef@[::1]:7701"}
	c.Exit.Policy = nil // unlike the default's
	c.Pseudonym = "alice-1"
	c.Tunnels.MinCircuits = 7
	c.Control.Listen = "127.0.0.1:0"
	if err := c.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path, false)
	if err != nil {
		t.Fatalf("the written file does not load: %v", err)
	}
	if !reflect.DeepEqual(normal(got), normal(c)) {
		t.Fatalf("read back\n%+v\nwant\n%+v", got, c)
	}
	if len(got.Exit.Policy) != 0 {
		t.Fatalf("an empty exit policy came back as %q", got.Exit.Policy)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v (%v), want 0640 kept", fi.Mode(), err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("files left beside the configuration: %v", ents)
	}
	// A directory that cannot take the temporary file: an error, the
	// old file untouched.
	if err := c.WriteFile(filepath.Join(dir, "missing", FileName)); err == nil {
		t.Fatal("writing into a missing directory succeeded")
	}
}
