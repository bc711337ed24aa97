package control

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"veil/circuits"
	"veil/proto"
)

// Nickname is the Tor nickname the port gives node id: "veil" and the
// first 8 hex digits of the ID (Tor nicknames are 1-19 letters and digits).
func Nickname(id proto.NodeID) string { return "veil" + id.Short() }

// Fingerprint is id as Tor writes a relay fingerprint: 40 upper-case hex digits.
func Fingerprint(id proto.NodeID) string { return strings.ToUpper(id.String()) }

// longName is Tor's "$FINGERPRINT~nickname".
func longName(id proto.NodeID) string { return "$" + Fingerprint(id) + "~" + Nickname(id) }

// circState is one origin circuit as the port reports it.
type circState struct {
	id      uint64
	status  string // LAUNCHED, EXTENDED, BUILT
	path    []proto.NodeID
	created time.Time
}

func (c *circState) line(status, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s", c.id, status)
	if len(c.path) > 0 {
		b.WriteByte(' ')
		for i, id := range c.path {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(longName(id))
		}
	}
	fmt.Fprintf(&b, " BUILD_FLAGS=NEED_CAPACITY PURPOSE=GENERAL TIME_CREATED=%s", c.created.UTC().Format("2006-01-02T15:04:05.000000"))
	if extra != "" {
		b.WriteString(" " + extra)
	}
	return b.String()
}

// destroyReasons are Tor's circuit close reasons by DESTROY code (veil's
// codes are Tor's).
var destroyReasons = []string{"NONE", "TORPROTOCOL", "INTERNAL", "REQUESTED", "HIBERNATING",
	"RESOURCELIMIT", "CONNECTFAILED", "OR_IDENTITY", "CHANNEL_CLOSED", "FINISHED", "TIMEOUT",
	"DESTROYED", "NOSUCHSERVICE"}

func reasonName(r proto.DestroyReason) string {
	if int(r) < len(destroyReasons) {
		return destroyReasons[r]
	}
	return "NONE"
}

// CircuitEvent is told of the switch's circuit events (it must not
// block: it queues CIRC events and updates the circuit table). Circuits
// carried for others are not reported, as Tor does not.
func (s *Server) CircuitEvent(ev circuits.Event) {
	if !ev.Origin {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	c := s.circs[ev.Circuit]
	if c == nil {
		if ev.Kind != circuits.EventLaunched && ev.Kind != circuits.EventExtended && ev.Kind != circuits.EventBuilt {
			// Closing a circuit we never saw launched: report it once.
			c = &circState{id: ev.Circuit, created: ev.At}
		} else {
			c = &circState{id: ev.Circuit, created: ev.At}
			s.circs[ev.Circuit] = c
		}
	}
	if ev.Path != nil {
		c.path = slices.Clone(ev.Path)
	}
	var status, extra string
	switch ev.Kind {
	case circuits.EventLaunched:
		status = "LAUNCHED"
		c.path = nil // Tor lists hops as they are built
	case circuits.EventExtended:
		status = "EXTENDED"
		c.path = c.path[:min(len(c.path), ev.Hops)]
	case circuits.EventBuilt:
		status = "BUILT"
	case circuits.EventFailed:
		status = "FAILED"
		reason := "CONNECTFAILED"
		if errors.Is(ev.Err, context.DeadlineExceeded) {
			reason = "TIMEOUT"
		}
		extra = "REASON=" + reason
		delete(s.circs, ev.Circuit)
	case circuits.EventClosed:
		status = "CLOSED"
		extra = "REASON=" + reasonName(ev.Reason)
		delete(s.circs, ev.Circuit)
	default:
		return
	}
	c.status = status
	s.emitLocked("CIRC", "CIRC "+c.line(status, extra))
}

// circuitStatus is GETINFO circuit-status: one line per origin circuit.
func (s *Server) circuitStatus() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := make([]*circState, 0, len(s.circs))
	for _, c := range s.circs {
		cs = append(cs, c)
	}
	slices.SortFunc(cs, func(a, b *circState) int { return cmpU64(a.id, b.id) })
	var lines []string
	for _, c := range cs {
		lines = append(lines, c.line(c.status, ""))
	}
	return strings.Join(lines, "\n")
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Stream statuses (control-spec §4.1.2).
const (
	StreamNew       = "NEW"
	StreamSucceeded = "SUCCEEDED"
	StreamFailed    = "FAILED"
	StreamClosed    = "CLOSED"
)

// Stream is one stream of the node's own, for StreamEvent.
type Stream struct {
	ID      uint64 // unique per node
	Status  string // StreamNew, StreamSucceeded, StreamFailed, StreamClosed
	Circuit uint64 // the circuit it is attached to; 0 for none yet
	Target  string // HOST:PORT
	Reason  string // for FAILED and CLOSED: MISC, DONE, TIMEOUT, ...; "" for none
}

type streamState struct{ Stream }

// StreamEvent is told of a stream's step: it queues a STREAM event and
// keeps the stream in stream-status until it fails or closes.
func (s *Server) StreamEvent(st Stream) {
	if s == nil {
		return
	}
	line := fmt.Sprintf("STREAM %d %s %d %s", st.ID, st.Status, st.Circuit, oneLine(strings.ReplaceAll(st.Target, " ", "")))
	if st.Reason != "" {
		line += " REASON=" + oneLine(strings.ReplaceAll(st.Reason, " ", ""))
	}
	line += " PURPOSE=USER"
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	switch st.Status {
	case StreamFailed, StreamClosed:
		delete(s.streams, st.ID)
	default:
		s.streams[st.ID] = &streamState{st}
	}
	s.emitLocked("STREAM", line)
}

func (s *Server) streamStatus() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]uint64, 0, len(s.streams))
	for id := range s.streams {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var lines []string
	for _, id := range ids {
		st := s.streams[id]
		lines = append(lines, fmt.Sprintf("%d %s %d %s", st.ID, st.Status, st.Circuit, st.Target))
	}
	return strings.Join(lines, "\n")
}

func (s *Server) orconnStatus() string {
	var lines []string
	for _, l := range s.cfg.Backend.Links() {
		lines = append(lines, longName(l.Peer)+" CONNECTED")
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func (s *Server) bwEventCache() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	parts := make([]string, len(s.bwCache))
	for i, rw := range s.bwCache {
		parts[i] = fmt.Sprintf("%d,%d", rw[0], rw[1])
	}
	return strings.Join(parts, " ")
}
