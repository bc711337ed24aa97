package onion

import (
	"errors"
	"testing"

	"veil/proto"
)

func TestWindowsAuthenticated(t *testing.T) {
	s := NewSendWindow(CircWindowStart, CircWindowIncrement, true)
	r := NewRecvWindow(CircWindowStart, CircWindowIncrement)
	var sendmes []Tag
	sent := 0
	for round := range 3 {
		for s.Left() > 0 {
			var tag Tag
			tag[0], tag[1] = byte(sent), byte(sent>>8)
			s.Sent(tag)
			sent++
			if err := r.Received(); err != nil {
				t.Fatal(err)
			}
			if r.Consumed() {
				sendmes = append(sendmes, tag)
			}
		}
		if sent != CircWindowStart+round*CircWindowStart {
			t.Fatalf("sent %d before blocking", sent)
		}
		if len(sendmes) != CircWindowStart/CircWindowIncrement {
			t.Fatalf("%d sendmes", len(sendmes))
		}
		// A wrong tag is refused and does not open the window.
		bad := sendmes[0]
		bad[5] ^= 1
		if err := s.Sendme(proto.Sendme{Version: 1, Data: bad[:]}); !errors.Is(err, ErrSendmeTag) {
			t.Fatalf("bad tag: %v", err)
		}
		// Out of order is refused too.
		if err := s.Sendme(proto.Sendme{Version: 1, Data: sendmes[1][:]}); !errors.Is(err, ErrSendmeTag) {
			t.Fatalf("out of order: %v", err)
		}
		if err := s.Sendme(proto.Sendme{}); !errors.Is(err, ErrSendmeTag) {
			t.Fatalf("unauthenticated: %v", err)
		}
		for _, tg := range sendmes {
			if err := s.Sendme(proto.Sendme{Version: 1, Data: tg[:]}); err != nil {
				t.Fatal(err)
			}
		}
		sendmes = sendmes[:0]
		if s.Left() != CircWindowStart {
			t.Fatalf("window %d after all sendmes", s.Left())
		}
		if err := s.Sendme(proto.Sendme{Version: 1, Data: make([]byte, 16)}); !errors.Is(err, ErrUnexpectedSendme) {
			t.Fatalf("extra sendme: %v", err)
		}
	}
}

func TestStreamWindowHeldByReader(t *testing.T) {
	s := NewSendWindow(StreamWindowStart, StreamWindowIncrement, false)
	r := NewRecvWindow(StreamWindowStart, StreamWindowIncrement)
	for s.Left() > 0 {
		s.Sent(Tag{})
		if err := r.Received(); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Received(); !errors.Is(err, ErrWindow) {
		t.Fatalf("receiving past the window: %v", err)
	}
	// Nothing consumed: no SENDME, the sender stays blocked.
	for range StreamWindowIncrement - 1 {
		if r.Consumed() {
			t.Fatal("sendme before an increment was consumed")
		}
	}
	if !r.Consumed() {
		t.Fatal("no sendme after an increment was consumed")
	}
	if err := s.Sendme(proto.Sendme{}); err != nil || s.Left() != StreamWindowIncrement {
		t.Fatalf("sendme: %v left %d", err, s.Left())
	}
}

func TestCountsForFlow(t *testing.T) {
	for _, c := range []proto.RelayCommand{proto.RelayData, proto.RelayDBData, proto.RelayDBQuery} {
		if !CountsForFlow(c) {
			t.Errorf("%v should count", c)
		}
	}
	for _, c := range []proto.RelayCommand{proto.RelaySendme, proto.RelayBegin, proto.RelayEnd, proto.RelayExtend2} {
		if CountsForFlow(c) {
			t.Errorf("%v should not count", c)
		}
	}
}
