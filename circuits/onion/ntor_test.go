package onion

import (
	"bytes"
	"crypto/ecdh"
	"errors"
	"math/rand/v2"
	"testing"

	"veil/proto"
)

type seeded struct{ r *rand.ChaCha8 }

func (s seeded) Read(p []byte) (int, error) { return s.r.Read(p) }

func newSeeded(n byte) seeded {
	var s [32]byte
	s[0] = n
	return seeded{rand.NewChaCha8(s)}
}

func testKey(t *testing.T, n byte) *ecdh.PrivateKey {
	k, err := NewOnionKey(newSeeded(n))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestNtorAgrees(t *testing.T) {
	id := proto.NodeID{1, 2, 3}
	cur, prev := testKey(t, 1), testKey(t, 2)
	for _, k := range []*ecdh.PrivateKey{cur, prev} {
		c, req, err := NewClientHandshake(newSeeded(3), id, k.PublicKey().Bytes())
		if err != nil {
			t.Fatal(err)
		}
		wire := req.Append(nil)
		req2, err := proto.ParseCreate2(append(wire, make([]byte, 100)...))
		if err != nil {
			t.Fatal(err)
		}
		resp, skm, err := ServerHandshake(newSeeded(4), id, ServerKeys{Current: cur, Previous: prev}, req2)
		if err != nil {
			t.Fatal(err)
		}
		resp2, err := proto.ParseCreated2(resp.Append(nil))
		if err != nil {
			t.Fatal(err)
		}
		ckm, err := c.Finish(resp2)
		if err != nil {
			t.Fatal(err)
		}
		if ckm != skm || ckm == (KeyMaterial{}) {
			t.Fatal("key material differs")
		}
		if _, err := c.Finish(resp2); !errors.Is(err, ErrState) {
			t.Fatalf("second Finish: %v", err)
		}
	}
}

func TestNtorDeterministic(t *testing.T) {
	id := proto.NodeID{9}
	b := testKey(t, 1)
	run := func() KeyMaterial {
		c, req, _ := NewClientHandshake(newSeeded(5), id, b.PublicKey().Bytes())
		resp, _, err := ServerHandshake(newSeeded(6), id, ServerKeys{Current: b}, req)
		if err != nil {
			t.Fatal(err)
		}
		km, err := c.Finish(resp)
		if err != nil {
			t.Fatal(err)
		}
		return km
	}
	if run() != run() {
		t.Fatal("same seeds gave different keys")
	}
}

func TestNtorRefusals(t *testing.T) {
	id := proto.NodeID{7}
	b := testKey(t, 1)
	other := testKey(t, 9)
	keys := ServerKeys{Current: b}

	_, req, _ := NewClientHandshake(nil, proto.NodeID{8}, b.PublicKey().Bytes())
	if _, _, err := ServerHandshake(nil, id, keys, req); !errors.Is(err, ErrWrongNode) {
		t.Fatalf("wrong id: %v", err)
	}
	_, req, _ = NewClientHandshake(nil, id, other.PublicKey().Bytes())
	if _, _, err := ServerHandshake(nil, id, keys, req); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("unknown key: %v", err)
	}
	_, req, _ = NewClientHandshake(nil, id, b.PublicKey().Bytes())
	req.HType = 1
	if _, _, err := ServerHandshake(nil, id, keys, req); !errors.Is(err, ErrHandshakeType) {
		t.Fatalf("htype: %v", err)
	}
	// Low-order point X = 0 must be refused, not give a predictable key.
	_, req, _ = NewClientHandshake(nil, id, b.PublicKey().Bytes())
	clear(req.HData[proto.IDSize+32:])
	if _, _, err := ServerHandshake(nil, id, keys, req); !errors.Is(err, ErrBadPoint) {
		t.Fatalf("zero point: %v", err)
	}
	if _, _, err := ServerHandshake(nil, id, keys, proto.Create2{HType: proto.HandshakeNtor, HData: req.HData[:10]}); err == nil {
		t.Fatal("short request accepted")
	}

	// A server without b (an impostor answering for the ID) fails AUTH; so
	// does any flipped bit of a genuine answer.
	c, req, _ := NewClientHandshake(nil, id, b.PublicKey().Bytes())
	if _, _, err := ServerHandshake(nil, id, ServerKeys{Current: other}, req); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("impostor: %v", err)
	}
	resp, _, err := ServerHandshake(nil, id, keys, req)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < proto.NtorReplySize; i += 5 {
		c2 := *c
		bad := proto.Created2{HData: bytes.Clone(resp.HData)}
		bad.HData[i] ^= 0x40
		if _, err := c2.Finish(bad); err == nil {
			t.Fatalf("flip at byte %d accepted", i)
		}
	}
	if _, err := c.Finish(proto.Created2{HData: resp.HData[:40]}); !errors.Is(err, ErrBadAuth) {
		t.Fatalf("short reply: %v", err)
	}
}

func TestNtorImpostorAuth(t *testing.T) {
	// An impostor who knows B but not b forges a reply: AUTH must fail.
	id := proto.NodeID{7}
	b := testKey(t, 1)
	c, req, _ := NewClientHandshake(nil, id, b.PublicKey().Bytes())
	y := testKey(t, 3)
	fake := append(bytes.Clone(y.PublicKey().Bytes()), make([]byte, 32)...)
	_ = req
	if _, err := c.Finish(proto.Created2{HData: fake}); !errors.Is(err, ErrBadAuth) {
		t.Fatalf("forged reply: %v", err)
	}
}

func BenchmarkNtor(b *testing.B) {
	id := proto.NodeID{1}
	k, _ := NewOnionKey(nil)
	keys := ServerKeys{Current: k}
	b.ReportAllocs()
	for b.Loop() {
		c, req, _ := NewClientHandshake(nil, id, k.PublicKey().Bytes())
		resp, _, err := ServerHandshake(nil, id, keys, req)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Finish(resp); err != nil {
			b.Fatal(err)
		}
	}
}
