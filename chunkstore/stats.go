package chunkstore

// Stats are a Store's counters since it was opened, for metrics.
type Stats struct {
	// VerifyFailures counts ranges Ingest refused because a chunk or
	// its proof did not verify against the content's descriptor or head.
	VerifyFailures int64
	// Commits counts the transactions the writer committed.
	Commits int64
	// LiveRestarts counts live heads taken without a consistency proof
	// because they were longer than the store's by the kept windows or
	// more (the store fell behind everything it kept; see Ingest).
	LiveRestarts int64
}

// Stats returns the counters; safe from any goroutine.
func (s *Store) Stats() Stats {
	return Stats{VerifyFailures: s.rejects.Load(), Commits: s.commits.Load(), LiveRestarts: s.restarts.Load()}
}
