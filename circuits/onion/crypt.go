package onion

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"

	"veil/proto"
)

// Offsets in a relay cell payload, where the crypto works in place.
const (
	offRecognized = proto.RelayRecognizedOffset
	offDigest     = proto.RelayDigestOffset
)

// Payload is a cell payload; crypto runs on it in place.
type Payload = [proto.CellPayloadSize]byte

// TagSize is the size of a full GMAC tag: the cell carries its first
// proto.DigestSize bytes, an authenticated SENDME carries all of it.
const TagSize = proto.SendmeTagSize

// Tag is the full GMAC tag of one relay cell for the hop that originated or
// consumed it. The cell carries its first proto.DigestSize bytes.
type Tag [TagSize]byte

// dir is one direction of one hop: a continuing AES-128-CTR keystream and a
// GMAC key with its cell counter (the nonce). The cipher state (two expanded
// AES keys and a GHASH table, ~1.3 KB a direction) is built from key on the
// direction's first cell, and dropped again by park when the circuit goes
// quiet: a circuit built ahead of need, or one that carried a few control
// cells and waits, then holds its 32 bytes of key and its positions. The
// keystream resumes where it stopped: CTR's counter block is the number of
// 16-byte blocks used so far (the IV is zero), and the used part of a
// partial block is skipped.
type dir struct {
	ks    cipher.Stream // nil until the first cell and after park
	mac   cipher.AEAD
	key   [32]byte // AES key, then GMAC key
	pos   uint64   // keystream bytes used in this direction
	n     uint64   // relay cells sealed or accepted in this direction
	nonce [12]byte
	tag   [TagSize]byte // scratch for Seal's output; avoids an allocation
}

func newDir(k, m []byte) dir {
	var d dir
	copy(d.key[:16], k)
	copy(d.key[16:], m)
	return d
}

// ready builds the cipher state on first use, or after park.
func (d *dir) ready() {
	if d.ks != nil {
		return
	}
	blk, err := aes.NewCipher(d.key[:16])
	if err != nil {
		panic("onion: AES key: " + err.Error()) // 16-byte key: cannot fail
	}
	mb, err := aes.NewCipher(d.key[16:])
	if err != nil {
		panic("onion: AES key: " + err.Error())
	}
	g, err := cipher.NewGCM(mb)
	if err != nil {
		panic("onion: GCM: " + err.Error())
	}
	var iv [aes.BlockSize]byte
	binary.BigEndian.PutUint64(iv[8:], d.pos/aes.BlockSize)
	ks := cipher.NewCTR(blk, iv[:])
	if skip := d.pos % aes.BlockSize; skip != 0 {
		var used [aes.BlockSize]byte
		ks.XORKeyStream(used[:skip], used[:skip])
	}
	d.ks, d.mac = ks, g
}

// park drops the cipher state; the next cell builds it again from key and
// the positions.
func (d *dir) park() { d.ks, d.mac = nil, nil }

// xor adds or removes this direction's layer on p.
func (d *dir) xor(p *Payload) {
	d.ready()
	d.ks.XORKeyStream(p[:], p[:])
	d.pos += uint64(len(p))
}

// compute writes the tag of p (with its digest field zero) for cell number
// d.n into d.tag. The digest field must already be zero.
func (d *dir) compute(p *Payload) {
	d.ready()
	binary.BigEndian.PutUint64(d.nonce[4:], d.n)
	d.mac.Seal(d.tag[:0], d.nonce[:], nil, p[:])
}

// seal fills the digest field of a plaintext relay payload and advances the
// counter.
func (d *dir) seal(p *Payload) Tag {
	p[offRecognized], p[offRecognized+1] = 0, 0
	clear(p[offDigest : offDigest+proto.DigestSize])
	d.compute(p)
	copy(p[offDigest:], d.tag[:proto.DigestSize])
	d.n++
	return d.tag
}

// check reports whether a payload whose layer was just removed is for this
// hop: Recognized zero and the digest equal to the tag for the next counter.
// On success the counter advances; on failure p is left unchanged.
func (d *dir) check(p *Payload) (Tag, bool) {
	if p[offRecognized] != 0 || p[offRecognized+1] != 0 {
		return Tag{}, false
	}
	var got [proto.DigestSize]byte
	copy(got[:], p[offDigest:])
	clear(p[offDigest : offDigest+proto.DigestSize])
	d.compute(p)
	copy(p[offDigest:], got[:])
	if subtle.ConstantTimeCompare(got[:], d.tag[:proto.DigestSize]) != 1 {
		return Tag{}, false
	}
	d.n++
	return d.tag, true
}

// Hop is the layered-crypto state of one hop of a circuit, both directions.
// The client holds one per hop of its path; each relay holds the one it
// shares with the client. Forward is client -> relay. Not safe for
// concurrent use: each direction belongs to the goroutine that moves that
// direction's cells, and the two directions share no state, so one goroutine
// may run Forward methods while another runs Backward ones.
type Hop struct {
	fwd, bwd dir
}

// Park drops the hop's cipher state (~2.6 KB when both directions carried
// cells); the next cell in either direction builds that direction's again,
// at the keystream position and cell counter where it stopped. Use it on
// a circuit gone quiet. The caller must own both directions (no Forward
// or Backward method may run meanwhile).
func (h *Hop) Park() {
	h.fwd.park()
	h.bwd.park()
}

// Parked reports whether neither direction holds cipher state now. The
// caller must own both directions, as for Park.
func (h *Hop) Parked() bool { return h.fwd.ks == nil && h.bwd.ks == nil }

// NewHop builds a hop's state from its key material.
func NewHop(km *KeyMaterial) *Hop {
	return &Hop{
		fwd: newDir(km[0:16], km[32:48]),
		bwd: newDir(km[16:32], km[48:64]),
	}
}

// SealForward, on the client, makes plaintext relay payload p (Recognized and
// Digest are overwritten) a cell for path[target]: it fills the digest with
// that hop's forward tag and adds the forward layers of path[target] down to
// path[0]. It returns the full tag (kept for authenticated SENDMEs).
func SealForward(path []*Hop, target int, p *Payload) Tag {
	t := path[target].fwd.seal(p)
	for i := target; i >= 0; i-- {
		path[i].fwd.xor(p)
	}
	return t
}

// OpenBackward, on the client, removes backward layers from p hop by hop
// until one recognises it. It returns that hop's index and the cell's tag, or
// ok == false when no hop does (the circuit must then be destroyed: the cell
// was modified, dropped, reordered or forged on the way).
func OpenBackward(path []*Hop, p *Payload) (hop int, t Tag, ok bool) {
	for i, h := range path {
		h.bwd.xor(p)
		if t, ok := h.bwd.check(p); ok {
			return i, t, true
		}
	}
	return -1, Tag{}, false
}

// OpenForward, on a relay, removes this hop's forward layer from p and
// reports whether the cell is for this hop. A cell that is not goes on to the
// next hop; at the last hop it is a protocol error.
func (h *Hop) OpenForward(p *Payload) (Tag, bool) {
	h.fwd.xor(p)
	return h.fwd.check(p)
}

// SealBackward, on a relay, makes plaintext relay payload p a cell from this
// hop to the client: it fills the digest and adds this hop's backward layer.
func (h *Hop) SealBackward(p *Payload) Tag {
	t := h.bwd.seal(p)
	h.bwd.xor(p)
	return t
}

// RelayBackward, on a relay, adds this hop's backward layer to a cell coming
// from further down the circuit.
func (h *Hop) RelayBackward(p *Payload) {
	h.bwd.xor(p)
}
