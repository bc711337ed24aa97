package ordb

// ServeStream is Serve for a stream given as a CellStream, with the ID of
// the peer's circuit it came on (the advertisements checked are that
// circuit's): for a node that wraps its streams, to observe them in
// tests. It closes s.
func (p *Peer) ServeStream(s CellStream, circuit uint64) { _ = p.serve(s, circuit) }
