package proto

import (
	"crypto/ed25519"
	"fmt"
	"time"
)

// Sign fills IdentityKey, ORDB (the ID of that key) and Signature from
// priv. Every other field must be set first.
func (p *ProviderRecord) Sign(priv ed25519.PrivateKey) {
	pub := priv.Public().(ed25519.PublicKey)
	p.IdentityKey = append([]byte(nil), pub...)
	p.ORDB = NodeIDFromKey(pub)
	p.Signature = ed25519.Sign(priv, p.SignedBytes())
}

// Verify checks that p is well formed, that its ORDB ID is the ID of its
// identity key, that the key signed it, and that it has not expired at now.
func (p ProviderRecord) Verify(now time.Time) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if NodeIDFromKey(p.IdentityKey) != p.ORDB {
		return fmt.Errorf("%w (ORDB %v)", ErrRecordOwner, p.ORDB.Short())
	}
	if !ed25519.Verify(ed25519.PublicKey(p.IdentityKey), p.SignedBytes(), p.Signature) {
		return fmt.Errorf("%w (ORDB %v)", ErrRecordSignature, p.ORDB.Short())
	}
	if now.Unix() < 0 || p.Expires <= uint64(now.Unix()) {
		return fmt.Errorf("%w at %d (ORDB %v)", ErrRecordExpired, p.Expires, p.ORDB.Short())
	}
	return nil
}
