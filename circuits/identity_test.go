package circuits

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"veil/proto"
)

func TestIdentityPersistence(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	a, err := LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != proto.NodeIDFromKey(a.PublicKey()) {
		t.Fatal("ID is not the hash of the identity key")
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("data dir mode %#o, want 0700", perm)
	}
	for _, name := range []string{IdentityKeyFile, OnionKeyFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s mode %#o, want 0600", name, perm)
		}
	}
	b, err := LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b.ID != a.ID || !a.Key.Equal(b.Key) {
		t.Fatal("identity changed across restart")
	}
	if !bytes.Equal(a.OnionPublic(), b.OnionPublic()) {
		t.Fatal("onion key changed across restart")
	}
	if !a.OnionCreated().Truncate(time.Second).Equal(b.OnionCreated()) {
		t.Errorf("onion created %v, reloaded %v", a.OnionCreated(), b.OnionCreated())
	}

	// Rotation is persisted with the previous key and its grace period.
	now := time.Unix(1_800_000_000, 0)
	if err := b.RotateOnion(now); err != nil {
		t.Fatal(err)
	}
	c, err := LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	cur, prev := c.OnionKeys()
	if prev == nil || !bytes.Equal(prev.PublicKey().Bytes(), a.OnionPublic()) {
		t.Fatal("previous onion key lost across restart")
	}
	if !bytes.Equal(cur.PublicKey().Bytes(), b.OnionPublic()) {
		t.Fatal("rotated onion key lost across restart")
	}

	// An ephemeral identity differs each time and writes nothing.
	e1, err := NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	e2, _ := NewEphemeralIdentity()
	if e1.ID == e2.ID || e1.ID == a.ID {
		t.Fatal("ephemeral identities collide")
	}
	if err := e1.RotateOnion(now); err != nil {
		t.Fatal(err)
	}
}

func TestIdentityCorruptFiles(t *testing.T) {
	for _, c := range []struct {
		file    string
		content []byte
		perm    os.FileMode
	}{
		{IdentityKeyFile, []byte("short"), 0o600},
		{IdentityKeyFile, nil, 0o600},
		{IdentityKeyFile, bytes.Repeat([]byte{'x'}, identityFileSize), 0o600}, // right size, wrong magic
		{IdentityKeyFile, append([]byte("VEILID1\n"), make([]byte, 32)...), 0o644},
		{OnionKeyFile, []byte("VEILON1\n1234"), 0o600},
		{OnionKeyFile, bytes.Repeat([]byte{0}, 10000), 0o600},
	} {
		dir := t.TempDir()
		if _, err := LoadOrCreateIdentity(dir); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, c.file)
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, c.content, c.perm); err != nil {
			t.Fatal(err)
		}
		_ = os.Chmod(path, c.perm)
		_, err := LoadOrCreateIdentity(dir)
		if !errors.Is(err, ErrKeyFile) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s (%d bytes, mode %#o): got %v, want ErrKeyFile naming the file", c.file, len(c.content), c.perm, err)
		}
	}
	// A missing onion key file alone is recreated, the identity kept.
	dir := t.TempDir()
	a, _ := LoadOrCreateIdentity(dir)
	if err := os.Remove(filepath.Join(dir, OnionKeyFile)); err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreateIdentity(dir)
	if err != nil || b.ID != a.ID {
		t.Fatalf("missing onion key: %v", err)
	}
}

func TestIdentityRotation(t *testing.T) {
	id, err := NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	t0 := id.OnionCreated()
	first := id.OnionPublic()
	if cur, prev := id.OnionKeys(); prev != nil || !bytes.Equal(cur.PublicKey().Bytes(), first) {
		t.Fatal("fresh identity: want current only")
	}
	if rotated, err := id.RotateOnionIfDue(t0.Add(OnionKeyLifetime - time.Second)); rotated || err != nil {
		t.Fatalf("rotated before due: %v %v", rotated, err)
	}
	due := t0.Add(OnionKeyLifetime)
	if rotated, err := id.RotateOnionIfDue(due); !rotated || err != nil {
		t.Fatalf("not rotated when due: %v %v", rotated, err)
	}
	cur, prev := id.OnionKeys()
	if bytes.Equal(cur.PublicKey().Bytes(), first) || prev == nil || !bytes.Equal(prev.PublicKey().Bytes(), first) {
		t.Fatal("after rotation: want a new current and the old as previous")
	}
	// Within the grace period the previous key stays.
	if _, err := id.RotateOnionIfDue(due.Add(OnionKeyGrace - time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, prev := id.OnionKeys(); prev == nil {
		t.Fatal("previous key dropped during its grace period")
	}
	if rotated, _ := id.RotateOnionIfDue(due.Add(OnionKeyGrace)); rotated {
		t.Fatal("rotated again too early")
	}
	if _, prev := id.OnionKeys(); prev != nil {
		t.Fatal("previous key kept after its grace period")
	}
	// The descriptor names the current onion key.
	d, err := id.DescriptorAt(due, nil, proto.FlagRelay, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(d.OnionKey, cur.PublicKey().Bytes()) {
		t.Fatal("descriptor does not carry the current onion key")
	}
}

func TestIdentityDescriptor(t *testing.T) {
	id, err := NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	addrs := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:7700")}
	d, err := id.DescriptorAt(now, addrs, proto.FlagRelay|proto.FlagORDB, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Good, through the wire.
	got, err := proto.ParseNodeDescriptor(d.Append(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify(now); err != nil {
		t.Fatalf("good descriptor: %v", err)
	}
	if err := got.Verify(now.Add(-DescriptorClockSkew / 2)); err != nil {
		t.Fatalf("slightly slow clock: %v", err)
	}
	// Expired.
	if err := got.Verify(now.Add(time.Hour)); !errors.Is(err, proto.ErrDescriptorExpired) {
		t.Errorf("expired: got %v", err)
	}
	// Tampered on the wire.
	b := d.Append(nil)
	b[proto.IDSize+proto.IdentityKeySize+5] ^= 1 // a byte of the onion key
	if tampered, err := proto.ParseNodeDescriptor(b); err != nil {
		t.Fatal(err)
	} else if err := tampered.Verify(now); !errors.Is(err, proto.ErrDescriptorSignature) {
		t.Errorf("tampered: got %v", err)
	}
	// Someone else's ID.
	other, _ := NewEphemeralIdentity()
	wrong := d
	wrong.ID = other.ID
	if err := wrong.Verify(now); !errors.Is(err, proto.ErrDescriptorID) {
		t.Errorf("wrong ID: got %v", err)
	}
	// Bad inputs are errors, not panics.
	if _, err := id.DescriptorAt(now, make([]netip.AddrPort, proto.MaxDescriptorAddrs+1), 0, time.Hour); err == nil {
		t.Error("too many addresses accepted")
	}
	if _, err := id.DescriptorAt(now, nil, 0, 0); err == nil {
		t.Error("zero validity accepted")
	}
}
