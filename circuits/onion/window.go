package onion

import (
	"crypto/subtle"
	"fmt"

	"veil/proto"
)

// Flow-control windows, as Tor's. A window counts data-bearing relay cells
// (see CountsForFlow); the receiver returns a SENDME every Increment cells,
// which lets the sender send Increment more.
const (
	CircWindowStart       = 1000
	CircWindowIncrement   = 100
	StreamWindowStart     = 500
	StreamWindowIncrement = 50
)

// SendWindow is the sender's side of one window: how many counted cells it
// may still send, and, when authenticated, the tags of every Increment-th
// cell sent, which the SENDMEs must echo in order. Not safe for concurrent
// use. The zero value is a closed window; use NewSendWindow.
type SendWindow struct {
	left, start, inc int
	sent             uint64
	auth             bool
	tags             []Tag // ring of awaited tags, start/inc of them once the first is sent
	head, n          int
}

// NewSendWindow returns a full window of start cells refilled by inc.
// With auth, SENDMEs must carry the tag of the cell that triggered them.
// start must be a positive multiple of inc.
func NewSendWindow(start, inc int, auth bool) SendWindow {
	if inc <= 0 || start < inc || start%inc != 0 {
		panic(fmt.Sprintf("onion: bad window %d/+%d", start, inc))
	}
	// The tag ring waits for the first trigger cell: most windows (a
	// relay's, whose circuits end elsewhere) never send one.
	return SendWindow{left: start, start: start, inc: inc, auth: auth}
}

// Left is how many counted cells may be sent before the next SENDME.
func (w *SendWindow) Left() int { return w.left }

// Sent records one counted cell sent with tag t. The caller checks Left
// first; sending past the window is a programming error and panics.
func (w *SendWindow) Sent(t Tag) {
	if w.left <= 0 {
		panic("onion: sent past the send window")
	}
	w.left--
	w.sent++
	if w.auth && w.sent%uint64(w.inc) == 0 {
		if w.tags == nil {
			w.tags = make([]Tag, w.start/w.inc)
		}
		w.tags[(w.head+w.n)%len(w.tags)] = t
		w.n++
	}
}

// Sendme applies a SENDME received for this window. An authenticated window
// requires version 1 with the tag of the oldest unacknowledged trigger cell;
// a SENDME that would open the window past its start is refused.
func (w *SendWindow) Sendme(s proto.Sendme) error {
	if w.left+w.inc > w.start {
		return ErrUnexpectedSendme
	}
	if w.auth {
		if w.n == 0 {
			return ErrUnexpectedSendme
		}
		want := &w.tags[w.head]
		if s.Version != proto.SendmeVersionTag || len(s.Data) != TagSize ||
			subtle.ConstantTimeCompare(s.Data, want[:]) != 1 {
			return ErrSendmeTag
		}
		w.head = (w.head + 1) % len(w.tags)
		w.n--
	}
	w.left += w.inc
	return nil
}

// RecvWindow is the receiver's side of one window. Received counts a cell as
// it arrives; Consumed counts it as the application takes it and says when a
// SENDME is due. At circuit level veil calls both on arrival (as Tor, so one
// stalled stream does not stall its siblings); at stream level Consumed runs
// when the reader takes the data, so a slow reader holds the sender back.
// Not safe for concurrent use. Use NewRecvWindow.
type RecvWindow struct {
	left, inc, unacked int
}

// NewRecvWindow returns a window expecting at most start cells before the
// first SENDME, with SENDMEs every inc cells.
func NewRecvWindow(start, inc int) RecvWindow {
	if inc <= 0 || start < inc || start%inc != 0 {
		panic(fmt.Sprintf("onion: bad window %d/+%d", start, inc))
	}
	return RecvWindow{left: start, inc: inc}
}

// Received counts one arriving cell. ErrWindow means the peer sent past the
// window: a protocol violation.
func (w *RecvWindow) Received() error {
	if w.left <= 0 {
		return ErrWindow
	}
	w.left--
	return nil
}

// Consumed counts one cell taken by the application and reports whether a
// SENDME must be sent now (the window reopens by inc as it is).
func (w *RecvWindow) Consumed() bool {
	w.unacked++
	if w.unacked < w.inc {
		return false
	}
	w.unacked -= w.inc
	w.left += w.inc
	return true
}

// Left is how many more cells the peer may send.
func (w *RecvWindow) Left() int { return w.left }

// CountsForFlow reports whether relay cells with command c count against
// the flow-control windows: DATA and the DB_* family, the cells that carry
// an application's bytes.
func CountsForFlow(c proto.RelayCommand) bool { return c == proto.RelayData || c.IsDB() }
