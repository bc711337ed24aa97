package node

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"veil/cmd/veil/internal/config"
)

// A content's descriptor carries the public key that signed it, and
// anyone can hash a key into a node ID: signed by the node's identity
// key, a content would name the node that published it, which the DHT
// maps to an address. So a content is signed by a key made for it alone
// (forgotten once signed), or by a pseudonym the user chose to be known
// by (kept in the data directory), and never by the node's identity key.

// PseudonymDir is the data directory's folder of pseudonym keys, each
// NAME.key (mode 0600).
const PseudonymDir = "pseudonyms"

// ErrIdentityKey: a content would be signed by the node's identity key.
var ErrIdentityKey = errors.New("node: refusing to sign a content with the node's identity key: the descriptor would name this node (use a key per content or a pseudonym)")

var pseudonymMagic = []byte("VEILPS1\n")

// publishKey returns the key a content is signed with: a new one when
// pseudonym is "", else the pseudonym's (made on first use). forget says
// the caller should wipe it after signing.
func (n *Node) publishKey(pseudonym string) (key ed25519.PrivateKey, forget bool, err error) {
	if pseudonym == "" {
		_, key, err = ed25519.GenerateKey(rand.Reader)
		return key, true, err
	}
	if !config.ValidPseudonym(pseudonym) {
		return nil, false, &config.Error{Key: "pseudonym", Value: pseudonym, Allowed: `want 1..64 letters, digits, "-" or "_"`}
	}
	key, err = loadOrCreatePseudonym(filepath.Join(n.dataDir, PseudonymDir), pseudonym)
	return key, false, err
}

// checkPublishKey refuses the node's identity key.
func (n *Node) checkPublishKey(key ed25519.PrivateKey) error {
	if pub, ok := key.Public().(ed25519.PublicKey); !ok || bytes.Equal(pub, n.id.PublicKey()) {
		return ErrIdentityKey
	}
	return nil
}

func loadOrCreatePseudonym(dir, name string) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, name+".key")
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("pseudonym %s: %w", name, err)
		}
		seed := make([]byte, ed25519.SeedSize)
		if _, err := rand.Read(seed); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("pseudonym %s: %w", name, err)
		}
		_, err = f.Write(append(bytes.Clone(pseudonymMagic), seed...))
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return nil, fmt.Errorf("pseudonym %s: %w", name, err)
		}
		return ed25519.NewKeyFromSeed(seed), nil
	}
	if err != nil {
		return nil, fmt.Errorf("pseudonym %s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("pseudonym %s: %s is not a regular file", name, path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("pseudonym %s: %s has mode %#o, want 0600 (others may have read the key)", name, path, perm)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pseudonym %s: %w", name, err)
	}
	if len(b) != len(pseudonymMagic)+ed25519.SeedSize || !bytes.HasPrefix(b, pseudonymMagic) {
		return nil, fmt.Errorf("pseudonym %s: %s is corrupt (%d bytes)", name, path, len(b))
	}
	return ed25519.NewKeyFromSeed(b[len(pseudonymMagic):]), nil
}
