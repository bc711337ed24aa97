package onion

import (
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"

	"veil/proto"
)

// Protocol strings of veil's ntor (Tor's construction, veil's protocol ID so
// transcripts never mix with Tor's).
const (
	protoID  = "veil-ntor-curve25519-sha256-1"
	tMAC     = protoID + ":mac"
	tKey     = protoID + ":key_extract"
	tVerify  = protoID + ":verify"
	mExpand  = protoID + ":key_expand"
	serverID = "Server"
)

// KeyMaterialSize is how many bytes of key material one hop needs:
// Kf, Kb (AES-128-CTR) and Mf, Mb (GMAC keys), 16 bytes each.
const KeyMaterialSize = 64

// KeyMaterial is what a handshake yields for one hop; NewHop turns it into
// the hop's crypto state.
type KeyMaterial [KeyMaterialSize]byte

// ServerKeys are the onion keys a node accepts handshakes for: the current
// one and, during rotation, the previous one (nil when there is none).
type ServerKeys struct {
	Current  *ecdh.PrivateKey // the key the node's descriptor names now
	Previous *ecdh.PrivateKey // the key it named before rotation, or nil
}

func (k ServerKeys) find(pub []byte) *ecdh.PrivateKey {
	for _, p := range []*ecdh.PrivateKey{k.Current, k.Previous} {
		if p != nil && subtle.ConstantTimeCompare(p.PublicKey().Bytes(), pub) == 1 {
			return p
		}
	}
	return nil
}

// newKey draws an X25519 private key from rnd (crypto/rand when nil). It
// reads the scalar itself so that a seeded reader gives reproducible tests
// (ecdh's GenerateKey ignores its reader since Go 1.26).
func newKey(rnd io.Reader) (*ecdh.PrivateKey, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	var s [32]byte
	if _, err := io.ReadFull(rnd, s[:]); err != nil {
		return nil, fmt.Errorf("onion: drawing handshake key: %w", err)
	}
	return ecdh.X25519().NewPrivateKey(s[:])
}

// NewOnionKey draws a fresh X25519 onion key pair from rnd (crypto/rand when
// nil).
func NewOnionKey(rnd io.Reader) (*ecdh.PrivateKey, error) { return newKey(rnd) }

func dh(priv *ecdh.PrivateKey, pub []byte) ([]byte, error) {
	p, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPoint, err)
	}
	s, err := priv.ECDH(p) // rejects the all-zero output of low-order points
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPoint, err)
	}
	return s, nil
}

func mac(key string, parts ...[]byte) []byte {
	h := hmac.New(sha256.New, []byte(key))
	for _, p := range parts {
		h.Write(p)
	}
	return h.Sum(nil)
}

// derive computes KEY_SEED's expansion and AUTH from the two DH outputs.
func derive(xy, xb, id, b, x, y []byte) (KeyMaterial, []byte) {
	secret := make([]byte, 0, 2*32+proto.IDSize+3*32+len(protoID))
	secret = append(secret, xy...)
	secret = append(secret, xb...)
	secret = append(secret, id...)
	secret = append(secret, b...)
	secret = append(secret, x...)
	secret = append(secret, y...)
	secret = append(secret, protoID...)
	seed := mac(tKey, secret)
	verify := mac(tVerify, secret)
	auth := mac(tMAC, verify, id, b, y, x, []byte(protoID), []byte(serverID))
	clear(secret)

	var km KeyMaterial
	out, err := hkdf.Expand(sha256.New, seed, mExpand, KeyMaterialSize)
	if err != nil {
		panic("onion: hkdf expand of 64 bytes failed: " + err.Error()) // cannot happen for this length
	}
	copy(km[:], out)
	clear(out)
	clear(seed)
	return km, auth
}

// ClientHandshake is the client side of one hop's ntor handshake. Its states
// are: created by NewClientHandshake (the CREATE2 body is ready), then
// Finish once with the CREATED2/EXTENDED2 body. Not safe for concurrent use.
type ClientHandshake struct {
	id   proto.NodeID
	b    [proto.OnionKeySize]byte
	x    *ecdh.PrivateKey
	done bool
}

// NewClientHandshake starts a handshake with the node id whose onion key
// (from its verified descriptor) is onionKey. It returns the state and the
// CREATE2 body to send (directly, or inside EXTEND2).
func NewClientHandshake(rnd io.Reader, id proto.NodeID, onionKey []byte) (*ClientHandshake, proto.Create2, error) {
	if len(onionKey) != proto.OnionKeySize {
		return nil, proto.Create2{}, fmt.Errorf("%w: onion key of %d bytes", ErrBadPoint, len(onionKey))
	}
	x, err := newKey(rnd)
	if err != nil {
		return nil, proto.Create2{}, err
	}
	c := &ClientHandshake{id: id, x: x}
	copy(c.b[:], onionKey)
	req := proto.NtorRequest{ID: id, B: c.b}
	copy(req.X[:], x.PublicKey().Bytes())
	return c, proto.Create2{HType: proto.HandshakeNtor, HData: req.Append(make([]byte, 0, proto.NtorRequestSize))}, nil
}

// Finish checks the server's answer and returns the hop's key material. It
// may be called once; any error means the hop is not authenticated and the
// circuit must be torn down.
func (c *ClientHandshake) Finish(reply proto.Created2) (KeyMaterial, error) {
	if c.done {
		return KeyMaterial{}, ErrState
	}
	c.done = true
	rep, err := proto.ParseNtorReply(reply.HData)
	if err != nil {
		return KeyMaterial{}, fmt.Errorf("%w: %w", ErrBadAuth, err)
	}
	y, auth := rep.Y[:], rep.Auth[:]
	xy, err := dh(c.x, y)
	if err != nil {
		return KeyMaterial{}, err
	}
	xb, err := dh(c.x, c.b[:])
	if err != nil {
		return KeyMaterial{}, err
	}
	km, want := derive(xy, xb, c.id[:], c.b[:], c.x.PublicKey().Bytes(), y)
	if !hmac.Equal(want, auth) {
		clear(km[:])
		return KeyMaterial{}, ErrBadAuth
	}
	c.x = nil
	return km, nil
}

// ServerHandshake answers a CREATE2 addressed to node self holding keys. It
// returns the CREATED2 body and the hop's key material. Errors name why the
// handshake was refused (the caller answers with DESTROY PROTOCOL).
func ServerHandshake(rnd io.Reader, self proto.NodeID, keys ServerKeys, req proto.Create2) (proto.Created2, KeyMaterial, error) {
	if req.HType != proto.HandshakeNtor {
		return proto.Created2{}, KeyMaterial{}, fmt.Errorf("%w: %d", ErrHandshakeType, req.HType)
	}
	m, err := proto.ParseNtorRequest(req.HData)
	if err != nil {
		return proto.Created2{}, KeyMaterial{}, fmt.Errorf("onion: %w: %w", proto.ErrBadLength, err)
	}
	id, bpub, x := m.ID[:], m.B[:], m.X[:]
	if subtle.ConstantTimeCompare(id, self[:]) != 1 {
		return proto.Created2{}, KeyMaterial{}, ErrWrongNode
	}
	b := keys.find(bpub)
	if b == nil {
		return proto.Created2{}, KeyMaterial{}, ErrUnknownKey
	}
	y, err := newKey(rnd)
	if err != nil {
		return proto.Created2{}, KeyMaterial{}, err
	}
	xy, err := dh(y, x)
	if err != nil {
		return proto.Created2{}, KeyMaterial{}, err
	}
	xb, err := dh(b, x)
	if err != nil {
		return proto.Created2{}, KeyMaterial{}, err
	}
	ypub := y.PublicKey().Bytes()
	km, auth := derive(xy, xb, id, bpub, x, ypub)
	var rep proto.NtorReply
	copy(rep.Y[:], ypub)
	copy(rep.Auth[:], auth)
	return proto.Created2{HData: rep.Append(make([]byte, 0, proto.NtorReplySize))}, km, nil
}
