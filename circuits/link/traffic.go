package link

import "sync/atomic"

// Traffic counts the bytes that crossed the sockets of all links, TLS
// records and handshakes included, since the Links were made.
type Traffic struct {
	In, Out uint64
}

// trafficCounters are updated once per socket read or write (not per
// cell), by every link's goroutines.
type trafficCounters struct {
	in, out atomic.Uint64
}

// read and wrote accept a nil receiver: a deadlineConn made outside Links
// counts nothing.
func (t *trafficCounters) read(n int) {
	if t != nil && n > 0 {
		t.in.Add(uint64(n))
	}
}

func (t *trafficCounters) wrote(n int) {
	if t != nil && n > 0 {
		t.out.Add(uint64(n))
	}
}

// Traffic returns the bytes read from and written to the links' sockets
// so far.
func (m *Links) Traffic() Traffic {
	return Traffic{In: m.traffic.in.Load(), Out: m.traffic.out.Load()}
}
