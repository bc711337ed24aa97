package window

import (
	"errors"
	"fmt"

	"veil/proto"
)

// CircuitID names a circuit; the window never looks inside it. The shell
// picks the values (a pool index, a circuit handle's number, ...).
type CircuitID uint64

// Event is an input to Window.Handle: one of Descriptor, Data, End,
// CircuitFailed, BadChunk or Seek.
type Event interface{ isEvent() }

// Descriptor reports the verified answer (DB_CONNECTED) to a descriptor
// GET: the shell has checked that it hashes to the hash_name and that its
// signature holds.
type Descriptor struct {
	Circuit   CircuitID
	RequestID uint64
	// Size is the content's size in bytes (static content).
	Size uint64
	// Live marks an append-only live stream: it has no end, and reading
	// starts at Start.
	Live bool
	// Start is where a live stream's reading starts: what the ORDB says the
	// stream stands at (the Peersm specification's "number of chunks known
	// minus twice the window"). Ignored for static content.
	Start uint64
	// Have, if not nil, marks the chunks the shell already holds (a
	// resumed download): bit i%64 of word i/64 is chunk i, the layout of
	// chunkstore's Have. They are never asked for.
	Have []uint64
}

// Data reports Count consecutive chunks from Chunk, verified against the
// content's root and stored by the shell, from the answer to RequestID on
// Circuit (Count is at most proto.MaxDBDataChunks, what one DB_DATA holds). Chunks outside that GET, or of an unknown GET, are still taken
// if they fall in the window (they are verified content).
type Data struct {
	Circuit   CircuitID
	RequestID uint64
	Chunk     uint64
	Count     int
}

// End reports a DB_END the ORDB sent for RequestID: the GET will get no
// more data, and whatever it did not deliver is asked again elsewhere.
type End struct {
	Circuit   CircuitID
	RequestID uint64
	Reason    proto.DBEndReason
}

// CircuitFailed reports that a circuit is gone (DESTROY, a broken link,
// a closed stream). Its GETs are resumed on other circuits.
type CircuitFailed struct {
	Circuit CircuitID
}

// BadChunk reports that chunks of an answer failed verification; the shell
// did not store them. The circuit is blamed (replaced) and the chunks are
// asked on another circuit.
type BadChunk struct {
	Circuit   CircuitID
	RequestID uint64
	Chunk     uint64
	Count     int
}

// Seek moves the read position: the consumer (a player) wants Chunk next.
// GETs outside the new window are cancelled and chunks from Chunk on come
// first; a static download still ends with every chunk held.
type Seek struct {
	Chunk uint64
}

// LiveHead says the newest head of a live stream the shell holds (verified,
// taken by its store) has Length chunks: tell it after each Data of a live
// stream whose head grew. A read position more than LiveKeep windows
// behind it jumps ahead (Skipped).
type LiveHead struct {
	Length uint64
}

func (LiveHead) isEvent() {}

func (Descriptor) isEvent()    {}
func (Data) isEvent()          {}
func (End) isEvent()           {}
func (CircuitFailed) isEvent() {}
func (BadChunk) isEvent()      {}
func (Seek) isEvent()          {}

// Action is an output of Window.Ready: one of SendGet, Cancel,
// ReplaceCircuit, Deliver, Evict, Done or Fail. doc.go says what the shell
// does with each.
type Action interface{ isAction() }

// SendGet asks the shell to send Query (a DB_QUERY) on Circuit.
type SendGet struct {
	Circuit CircuitID
	Query   proto.DBQuery
}

// Cancel asks the shell to end GET RequestID on Circuit with DB_END
// FINISHED and to drop whatever still arrives for it (or to hand it to
// Handle: the window takes chunks it lacks and counts the rest).
type Cancel struct {
	Circuit   CircuitID
	RequestID uint64
}

// Why says why a circuit is replaced.
type Why uint8

// Reasons for ReplaceCircuit.
const (
	WhySlow        Why = iota + 1 // much slower than the others
	WhyStalled                    // GETs outstanding, no data for too long
	WhyFailed                     // the shell reported CircuitFailed
	WhyBadData                    // sent a chunk that failed verification
	WhyUnavailable                // its ORDB keeps answering DB_END
)

func (w Why) String() string {
	switch w {
	case WhySlow:
		return "slow"
	case WhyStalled:
		return "stalled"
	case WhyFailed:
		return "failed"
	case WhyBadData:
		return "bad data"
	case WhyUnavailable:
		return "unavailable"
	}
	return fmt.Sprintf("Why(%d)", uint8(w))
}

// ReplaceCircuit tells the shell that the window dropped Circuit: destroy
// it (if it still exists), build a new circuit to another ORDB, and call
// AddCircuit when it is ready. The window has already forgotten every GET
// on it; nothing more needs cancelling.
type ReplaceCircuit struct {
	Circuit CircuitID
	Why     Why
}

// Deliver says chunks [From, To) are held and are next in the consumer's
// reading order: hand them on (write them out, let the player read them).
type Deliver struct {
	From, To uint64
}

// Skipped says a live stream's read position jumped from From to To: the
// chunks between are gone from what the publisher keeps (LiveKeep windows
// behind its newest head), so, as a live player would, reading goes on
// with what is still available. No Deliver covers them.
type Skipped struct {
	From, To uint64
}

// Evict says a live stream's chunks below Below are more than LiveKeep
// windows behind the read position: the shell may delete them.
type Evict struct {
	Below uint64
}

// Done says every chunk of a static content is held and delivered. The
// window sends nothing more.
type Done struct{}

// Fail says the download cannot go on (Err says why); every outstanding GET
// has been cancelled. The window sends nothing more.
type Fail struct {
	Err error
}

func (SendGet) isAction()        {}
func (Cancel) isAction()         {}
func (Skipped) isAction()        {}
func (ReplaceCircuit) isAction() {}
func (Deliver) isAction()        {}
func (Evict) isAction()          {}
func (Done) isAction()           {}
func (Fail) isAction()           {}

// Errors carried by Fail.
var (
	// ErrUnavailable: MaxFailures GETs failed in a row with no progress.
	ErrUnavailable = errors.New("window: content unavailable")
	// ErrTooLarge: the descriptor gives more than MaxChunks chunks.
	ErrTooLarge = errors.New("window: content has too many chunks")
	// ErrStopped: Stop was called.
	ErrStopped = errors.New("window: stopped")
)
