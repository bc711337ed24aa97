package onion

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"veil/proto"
)

// testPath builds n hops whose client and relay states share keys.
func testPath(t testing.TB, n int) (client, relays []*Hop) {
	r := rand.New(rand.NewPCG(1, 2))
	for range n {
		var km KeyMaterial
		for i := range km {
			km[i] = byte(r.Uint32())
		}
		client = append(client, NewHop(&km))
		relays = append(relays, NewHop(&km))
	}
	return client, relays
}

func relayPayload(t testing.TB, cmd proto.RelayCommand, stream uint16, data []byte) *Payload {
	var p Payload
	if err := proto.PutRelay(&p, proto.RelayHeader{Command: cmd, StreamID: stream}, data); err != nil {
		t.Fatal(err)
	}
	return &p
}

func TestForwardReachesTarget(t *testing.T) {
	client, relays := testPath(t, 3)
	for round := range 5 {
		for target := range 3 {
			data := []byte{byte(round), byte(target), 'x'}
			p := relayPayload(t, proto.RelayData, 7, data)
			want := *p
			tag := SealForward(client, target, p)
			got := -1
			for i, h := range relays {
				rt, ok := h.OpenForward(p)
				if ok {
					got = i
					if rt != tag {
						t.Fatalf("relay tag %x, client tag %x", rt, tag)
					}
					break
				}
			}
			if got != target {
				t.Fatalf("round %d: cell for hop %d recognised at %d", round, target, got)
			}
			r, err := proto.ParseRelay(p[:])
			if err != nil || !bytes.Equal(r.Data, data) || r.StreamID != 7 {
				t.Fatalf("plaintext mismatch: %v %+v", err, r)
			}
			// Everything but the digest is the original plaintext.
			copy(want[offDigest:offDigest+4], p[offDigest:offDigest+4])
			if want != *p {
				t.Fatal("payload changed beyond the digest")
			}
		}
	}
}

func TestBackwardFromEachHop(t *testing.T) {
	client, relays := testPath(t, 3)
	for round := range 5 {
		for from := range 3 {
			p := relayPayload(t, proto.RelayData, 1, []byte{byte(round), byte(from)})
			tag := relays[from].SealBackward(p)
			for i := from - 1; i >= 0; i-- {
				relays[i].RelayBackward(p)
			}
			hop, ct, ok := OpenBackward(client, p)
			if !ok || hop != from || ct != tag {
				t.Fatalf("round %d: from %d: got hop %d ok %v", round, from, hop, ok)
			}
			r, _ := proto.ParseRelay(p[:])
			if r.Data[0] != byte(round) || r.Data[1] != byte(from) {
				t.Fatal("backward plaintext mismatch")
			}
		}
	}
}

func TestBitFlipDetected(t *testing.T) {
	for bit := 0; bit < proto.CellPayloadSize*8; bit += 37 {
		client, relays := testPath(t, 3)
		p := relayPayload(t, proto.RelayData, 1, bytes.Repeat([]byte{0xAB}, 300))
		SealForward(client, 2, p)
		relays[0].OpenForward(p)
		p[bit/8] ^= 1 << (bit % 8) // the middle relay's upstream tampers
		if _, ok := relays[1].OpenForward(p); ok {
			continue // astronomically unlikely; not the check under test
		}
		if _, ok := relays[2].OpenForward(p); ok {
			t.Fatalf("flip of bit %d not detected at the endpoint", bit)
		}
	}
}

func TestDropAndReplayDetected(t *testing.T) {
	client, relays := testPath(t, 1)
	a := relayPayload(t, proto.RelayData, 1, []byte("a"))
	b := relayPayload(t, proto.RelayData, 1, []byte("b"))
	SealForward(client, 0, a)
	SealForward(client, 0, b)
	// a is dropped: b arrives first and its keystream and counter disagree.
	if _, ok := relays[0].OpenForward(b); ok {
		t.Fatal("cell after a dropped one accepted")
	}

	client, relays = testPath(t, 1)
	a = relayPayload(t, proto.RelayData, 1, []byte("a"))
	SealForward(client, 0, a)
	replay := *a
	if _, ok := relays[0].OpenForward(a); !ok {
		t.Fatal("first cell refused")
	}
	if _, ok := relays[0].OpenForward(&replay); ok {
		t.Fatal("replayed cell accepted")
	}
}

func TestUnrecognisedBackwardFails(t *testing.T) {
	client, relays := testPath(t, 2)
	p := relayPayload(t, proto.RelayData, 1, []byte("z"))
	relays[1].SealBackward(p)
	relays[0].RelayBackward(p)
	p[100] ^= 0x10
	if _, _, ok := OpenBackward(client, p); ok {
		t.Fatal("tampered backward cell accepted")
	}
}

var sinkTag Tag

// BenchmarkHopCrypt measures one hop's layer on one cell: "relay" is what a
// middle hop does per cell (remove a layer, look at Recognized), "seal" what
// the originating end does for the hop a cell is for (GMAC + layer), "open"
// what the receiving end does (layer + GMAC check).
func BenchmarkHopCrypt(b *testing.B) {
	client, relays := testPath(b, 1)
	p := relayPayload(b, proto.RelayData, 1, bytes.Repeat([]byte{1}, proto.RelayDataSize))
	b.Run("relay", func(b *testing.B) {
		b.SetBytes(proto.CellPayloadSize)
		b.ReportAllocs()
		for b.Loop() {
			p[offRecognized] = 1 // never ours: the middle-hop path
			relays[0].RelayBackward(p)
		}
	})
	b.Run("seal", func(b *testing.B) {
		b.SetBytes(proto.CellPayloadSize)
		b.ReportAllocs()
		for b.Loop() {
			sinkTag = relays[0].SealBackward(p)
		}
	})
	b.Run("seal+open", func(b *testing.B) {
		b.SetBytes(proto.CellPayloadSize)
		b.ReportAllocs()
		var q Payload
		for b.Loop() {
			q = *p
			sinkTag = SealForward(client, 0, &q)
			var ok bool
			sinkTag, ok = relays[0].OpenForward(&q)
			if !ok {
				b.Fatal("not recognised")
			}
		}
	})
}

// A parked hop resumes both keystreams and both counters where they
// stopped: a path whose relays are parked at random moments (after 0, 1 or
// many cells, in the middle of a CTR block since cells are 509 bytes)
// recognises and relays exactly what an unparked path does, both ways.
func TestParkResumes(t *testing.T) {
	client, relays := testPath(t, 3)
	_, plain := testPath(t, 3) // the same keys: never parked
	r := rand.New(rand.NewPCG(3, 4))
	for round := range 200 {
		if r.IntN(3) == 0 {
			for _, h := range relays {
				h.Park()
			}
		}
		if round%7 == 0 {
			relays[r.IntN(3)].Park()
		}
		target := r.IntN(3)
		data := []byte{byte(round), byte(target)}
		p := relayPayload(t, proto.RelayData, 9, data)
		SealForward(client, target, p)
		q := *p
		got, gotPlain := -1, -1
		for i := range relays {
			if _, ok := relays[i].OpenForward(p); ok && got < 0 {
				got = i
				break
			}
		}
		for i := range plain {
			if _, ok := plain[i].OpenForward(&q); ok {
				gotPlain = i
				break
			}
		}
		if got != target || gotPlain != target || *p != q {
			t.Fatalf("round %d: forward cell for hop %d recognised at %d (unparked %d), payloads equal %v", round, target, got, gotPlain, *p == q)
		}
		// And back from that hop.
		b := relayPayload(t, proto.RelayData, 9, data)
		bq := *b
		relays[target].SealBackward(b)
		plain[target].SealBackward(&bq)
		for i := target - 1; i >= 0; i-- {
			relays[i].RelayBackward(b)
			plain[i].RelayBackward(&bq)
		}
		if *b != bq {
			t.Fatalf("round %d: a parked path's backward cell differs from an unparked one's", round)
		}
		if hop, _, ok := OpenBackward(client, b); !ok || hop != target {
			t.Fatalf("round %d: backward cell from hop %d opened at %d (%v)", round, target, hop, ok)
		}
	}
}
