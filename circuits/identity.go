package circuits

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"veil/proto"
)

// Onion key schedule. A node makes a new onion key every OnionKeyLifetime
// and keeps answering handshakes for the previous one during OnionKeyGrace,
// since clients may still hold a descriptor listing it.
const (
	OnionKeyLifetime = 7 * 24 * time.Hour
	OnionKeyGrace    = 24 * time.Hour
	// DescriptorClockSkew backdates a descriptor's ValidAfter so nodes whose
	// clocks run a little slow still accept it.
	DescriptorClockSkew = 10 * time.Minute
)

// Files in the data directory. Both are written with mode 0600 in a 0700
// directory, atomically (write to a temporary file, then rename).
const (
	IdentityKeyFile = "identity.key" // "VEILID1\n" + Ed25519 seed 32B
	OnionKeyFile    = "onion.key"    // "VEILON1\n" + created 8B + key 32B + previous expires 8B + previous key 32B
)

var (
	identityMagic = []byte("VEILID1\n")
	onionMagic    = []byte("VEILON1\n")
)

const (
	identityFileSize = 8 + ed25519.SeedSize
	onionFileSize    = 8 + 8 + 32 + 8 + 32
)

// ErrKeyFile reports a key file that is unreadable, corrupt or too widely
// readable. The error names the file.
var ErrKeyFile = errors.New("circuits: bad key file")

// Identity is a node's long-term Ed25519 identity key, the node ID derived
// from it, and its X25519 onion keys (current and, during a grace period
// after rotation, previous). Key and ID never change; the onion keys do, so
// they are read through methods. Safe for concurrent use.
type Identity struct {
	Key ed25519.PrivateKey // identity key; signs descriptors and the TLS certificate
	ID  proto.NodeID       // proto.NodeIDFromKey(Key.Public())

	dir string // data directory; "" for an ephemeral identity

	mu           sync.Mutex // guards the onion key fields below
	onion        *ecdh.PrivateKey
	onionCreated time.Time
	prev         *ecdh.PrivateKey // nil when there is none
	prevUntil    time.Time
}

// NewEphemeralIdentity returns a fresh identity that lives in memory only.
// The Peersm specification changes IDs every session, so users cannot be
// tracked by them; a node that wants a stable ID uses LoadOrCreateIdentity.
func NewEphemeralIdentity() (*Identity, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("circuits: generating identity key: %w", err)
	}
	onion, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("circuits: generating onion key: %w", err)
	}
	return newIdentity(priv, onion, time.Now()), nil
}

func newIdentity(priv ed25519.PrivateKey, onion *ecdh.PrivateKey, created time.Time) *Identity {
	return &Identity{
		Key:          priv,
		ID:           proto.NodeIDFromKey(priv.Public().(ed25519.PublicKey)),
		onion:        onion,
		onionCreated: created,
	}
}

// LoadOrCreateIdentity loads the identity kept in dir, or creates one there
// (the directory with mode 0700, the key files with mode 0600). A missing
// onion key file is recreated; a corrupt, short or group/world-readable key
// file is an error naming the file, never silently replaced.
func LoadOrCreateIdentity(dir string) (*Identity, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("circuits: creating data directory: %w", err)
	}
	idPath := filepath.Join(dir, IdentityKeyFile)
	b, err := readKeyFile(idPath)
	var priv ed25519.PrivateKey
	switch {
	case errors.Is(err, os.ErrNotExist):
		seed := make([]byte, ed25519.SeedSize)
		if _, err := rand.Read(seed); err != nil {
			return nil, fmt.Errorf("circuits: generating identity key: %w", err)
		}
		priv = ed25519.NewKeyFromSeed(seed)
		if err := writeKeyFile(idPath, append(bytes.Clone(identityMagic), seed...)); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	default:
		if len(b) != identityFileSize || !bytes.HasPrefix(b, identityMagic) {
			return nil, fmt.Errorf("%w: %s: corrupt (%d bytes, want %d starting %q)", ErrKeyFile, idPath, len(b), identityFileSize, identityMagic[:7])
		}
		priv = ed25519.NewKeyFromSeed(b[len(identityMagic):])
	}

	id := newIdentity(priv, nil, time.Time{})
	id.dir = dir
	onPath := filepath.Join(dir, OnionKeyFile)
	b, err = readKeyFile(onPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if id.onion, err = ecdh.X25519().GenerateKey(rand.Reader); err != nil {
			return nil, fmt.Errorf("circuits: generating onion key: %w", err)
		}
		id.onionCreated = time.Now()
		if err := id.saveOnionLocked(); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	default:
		if err := id.decodeOnion(onPath, b); err != nil {
			return nil, err
		}
	}
	return id, nil
}

func readKeyFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrKeyFile, path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s: not a regular file", ErrKeyFile, path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s: mode %#o, want 0600 (others may have read the key)", ErrKeyFile, path, perm)
	}
	if fi.Size() > 4096 {
		return nil, fmt.Errorf("%w: %s: corrupt (%d bytes)", ErrKeyFile, path, fi.Size())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrKeyFile, path, err)
	}
	return b, nil
}

// writeKeyFile replaces path atomically with a 0600 file holding b.
func writeKeyFile(path string, b []byte) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("circuits: writing %s: %w", path, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("circuits: writing %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

func (id *Identity) decodeOnion(path string, b []byte) error {
	if len(b) != onionFileSize || !bytes.HasPrefix(b, onionMagic) {
		return fmt.Errorf("%w: %s: corrupt (%d bytes, want %d starting %q)", ErrKeyFile, path, len(b), onionFileSize, onionMagic[:7])
	}
	b = b[len(onionMagic):]
	created := int64(binary.BigEndian.Uint64(b))
	cur, err := ecdh.X25519().NewPrivateKey(b[8:40])
	if err != nil {
		return fmt.Errorf("%w: %s: onion key: %v", ErrKeyFile, path, err)
	}
	id.onion, id.onionCreated = cur, time.Unix(created, 0)
	if until := int64(binary.BigEndian.Uint64(b[40:])); until != 0 {
		prev, err := ecdh.X25519().NewPrivateKey(b[48:80])
		if err != nil {
			return fmt.Errorf("%w: %s: previous onion key: %v", ErrKeyFile, path, err)
		}
		id.prev, id.prevUntil = prev, time.Unix(until, 0)
	}
	return nil
}

// saveOnionLocked writes the onion keys to the data directory, if any.
func (id *Identity) saveOnionLocked() error {
	if id.dir == "" {
		return nil
	}
	b := make([]byte, 0, onionFileSize)
	b = append(b, onionMagic...)
	b = binary.BigEndian.AppendUint64(b, uint64(id.onionCreated.Unix()))
	b = append(b, id.onion.Bytes()...)
	if id.prev != nil {
		b = binary.BigEndian.AppendUint64(b, uint64(id.prevUntil.Unix()))
		b = append(b, id.prev.Bytes()...)
	} else {
		b = append(b, make([]byte, 8+32)...)
	}
	return writeKeyFile(filepath.Join(id.dir, OnionKeyFile), b)
}

// PublicKey returns the Ed25519 identity public key.
func (id *Identity) PublicKey() ed25519.PublicKey { return id.Key.Public().(ed25519.PublicKey) }

// OnionPrivate returns the current X25519 onion private key.
func (id *Identity) OnionPrivate() *ecdh.PrivateKey {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.onion
}

// OnionPublic returns the current X25519 onion public key (32 bytes), as
// carried in descriptors, DB_FIND_PEER and provider records.
func (id *Identity) OnionPublic() []byte { return id.OnionPrivate().PublicKey().Bytes() }

// OnionKeys returns the keys a handshake may be addressed to: the current
// one and the previous one (nil when there is none or its grace period has
// been dropped by RotateOnionIfDue). A server handshake tries the key whose
// public half the client named.
func (id *Identity) OnionKeys() (current, previous *ecdh.PrivateKey) {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.onion, id.prev
}

// OnionCreated returns when the current onion key was made.
func (id *Identity) OnionCreated() time.Time {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.onionCreated
}

// RotateOnion makes a new onion key now. The current key becomes the
// previous one and is kept until now+OnionKeyGrace so handshakes in flight,
// or from clients with the old descriptor, still complete. The new keys are
// saved before they are used.
func (id *Identity) RotateOnion(now time.Time) error {
	next, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("circuits: generating onion key: %w", err)
	}
	id.mu.Lock()
	defer id.mu.Unlock()
	oldOnion, oldCreated, oldPrev, oldUntil := id.onion, id.onionCreated, id.prev, id.prevUntil
	id.prev, id.prevUntil = id.onion, now.Add(OnionKeyGrace)
	id.onion, id.onionCreated = next, now
	if err := id.saveOnionLocked(); err != nil {
		id.onion, id.onionCreated, id.prev, id.prevUntil = oldOnion, oldCreated, oldPrev, oldUntil
		return err
	}
	return nil
}

// RotateOnionIfDue is the schedule: call it periodically (say hourly). It
// drops a previous key whose grace period has ended and rotates the current
// key once it is OnionKeyLifetime old. It reports whether it rotated, in
// which case the node should publish a new descriptor.
func (id *Identity) RotateOnionIfDue(now time.Time) (bool, error) {
	id.mu.Lock()
	due := !now.Before(id.onionCreated.Add(OnionKeyLifetime))
	if !due && id.prev != nil && !now.Before(id.prevUntil) {
		id.prev, id.prevUntil = nil, time.Time{}
		err := id.saveOnionLocked()
		id.mu.Unlock()
		return false, err
	}
	id.mu.Unlock()
	if !due {
		return false, nil
	}
	return true, id.RotateOnion(now)
}

// Descriptor returns a signed descriptor for this node with the current
// onion key, valid from now (backdated by DescriptorClockSkew) for validity.
func (id *Identity) Descriptor(addrs []netip.AddrPort, flags uint8, validity time.Duration) (proto.NodeDescriptor, error) {
	return id.DescriptorAt(time.Now(), addrs, flags, validity)
}

// DescriptorAt is Descriptor with the clock as an input.
func (id *Identity) DescriptorAt(now time.Time, addrs []netip.AddrPort, flags uint8, validity time.Duration) (proto.NodeDescriptor, error) {
	return id.ExitDescriptorAt(now, addrs, flags, nil, validity)
}

// ExitDescriptorAt is DescriptorAt for an exit (flags has
// proto.FlagExit), with the summary of the ports its policy accepts
// (exitpolicy.Policy.PortSummary).
func (id *Identity) ExitDescriptorAt(now time.Time, addrs []netip.AddrPort, flags uint8, ports []proto.PortRange, validity time.Duration) (proto.NodeDescriptor, error) {
	if validity <= 0 {
		return proto.NodeDescriptor{}, fmt.Errorf("circuits: descriptor validity %v must be positive", validity)
	}
	after := now.Add(-DescriptorClockSkew).Unix()
	if after < 0 {
		after = 0
	}
	d := proto.NodeDescriptor{
		ID:          id.ID,
		IdentityKey: id.PublicKey(),
		OnionKey:    id.OnionPublic(),
		Addrs:       addrs,
		Flags:       flags,
		ExitPorts:   ports,
		ValidAfter:  uint64(after),
		ValidUntil:  uint64(now.Add(validity).Unix()),
		Signature:   make([]byte, proto.SignatureSize), // placeholder for Validate
	}
	if err := d.Validate(); err != nil {
		return proto.NodeDescriptor{}, fmt.Errorf("circuits: building descriptor: %w", err)
	}
	d.Sign(id.Key)
	return d, nil
}
