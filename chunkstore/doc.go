// Package chunkstore keeps verified content on disk in one bbolt file:
// descriptors, chunks, the tree nodes needed to prove them to others, live
// heads and download progress. Nothing reaches the store before it has
// verified against its signed descriptor (or a live stream's signed head);
// see package content for the integrity model.
//
// Use:
//
//	requester  PutDescriptor(d) (after checking HashNameOf(d) is the name
//	           asked for), then Ingest(ctx, name, content.Range{...}) per
//	           window (it verifies); NewReader streams it in order; Progress and
//	           Config.OnProgress give DB_INFO's P.
//	server     Chunk(name, i) gives the bytes and DB_DATA's stamp; Proof(name,
//	           lo, hi) the DB_PROOF bytes (Proof.Append); any run of chunks it
//	           holds can be proved, from the nodes it learned verifying them.
//	publisher  Publish(ctx, key, mime, created, r); live: NewLivePublisher
//	           then Append, ResumeLivePublisher after a restart.
//
// Chunk indices here are 0-based; the wire's numbering is ordb's business.
//
// One Store per file: a second process (or a second Open in this one) gets
// ErrLocked after Config.LockTimeout instead of hanging.
//
// # Writes
//
// Ingest verifies a range in the caller's goroutine, then hands it to the
// store's single writer goroutine, which merges queued ranges into one bbolt
// transaction (up to Config.BatchBytes, or Config.BatchDelay after the first
// range) and fsyncs once. A crash loses at most the ranges not yet
// committed; every committed chunk verified before it was queued. Flush waits
// for the queue to reach the disk.
//
// # Layout (all keys fixed-width big-endian, so bbolt iterates in order)
//
//	names/   hash_name (20B) -> content ID (8B)
//	pending/ content ID -> ""            publication in progress; Open drops it
//	c/ID/    "d" -> descriptor (proto.DBConnected encoding)
//	         "count" -> chunks held (8B)   "head" -> newest live head
//	         r/ record index (8B) -> record of GroupChunks chunks
//	         n/ [a 8B][b 8B] -> 32B hash of the tree node over chunks [a, b)
//
// A record is [have bitmap 8B][live only: GroupChunks x timestamp 4B]
// [slots x 498B]; a static content's last record has only the slots it
// needs. 64 chunks (31 KiB values) per record: bbolt writes large values at
// near disk speed, and 498-byte values cost one B+tree item each.
package chunkstore
