// Package window is the five-circuit sliding-window GET scheduler of the
// Peersm specification ("Pieces and sliding window", "Requests"): it
// decides which chunk ranges to ask on which circuit, measures each
// circuit's time to first data (tm) and rate, keeps every circuit's
// pipeline full, replaces slow, stalled and failed circuits, resumes
// unfinished GETs where they stopped and delivers chunks in order.
//
// A Window is a pure state machine and not safe for concurrent use: it
// holds no goroutine, socket, clock or global randomness. AddCircuit,
// Handle(event, now) and Tick(now) take inputs; Ready returns the actions;
// Deadline says when Tick is next needed; a *rand.Rand given to New draws
// request IDs, counters and circuits. The same inputs give the same
// actions, which is what the simulator in the tests relies on.
//
// # The window
//
//	                      base (read position)                base + W
//	                      v                                   v
//	chunks  ... delivered |##..==##====....====##==....==...  | not asked yet
//	                      |  W1    |  W2    |  W3   |  W4  | W5 ...
//
//	# held (verified, stored by the shell), not yet deliverable
//	= in flight: asked in exactly one GET, on one circuit
//	. free: not held, not in flight; asked next, lowest first
//
// A GET is one DB_QUERY: at most ChunksPerGet = 64 chunks (31 kB), what an
// ORDB serves per query (ordb.DefaultMaxChunks). A block W1..W5 is
// BlockGets = 3 GETs, 192 chunks (95.6 kB), so the five blocks of the
// Peersm specification's ~500 kB window are MinWindow = 960 chunks
// (478 kB). Every chunk asked lies in [base, base+W), so the chunks in
// flight and those held ahead of base never exceed W.
//
// W starts at MinWindow and then follows the measurements: the chunks each
// circuit must keep in flight, plus what all circuits bring while one
// holds the read position (for as long as the slowest takes to drain its
// pipeline, or a circuit may bring nothing before it counts as stalled,
// whichever is longer), plus a GET per circuit; never above MaxWindow
// (16 MiB by default). A fixed 500 kB window would cap a download at
// 500 kB per round trip: five 2 MB/s circuits with 100 ms round trips
// need about 1.5 MB in flight, and round trips that differ 10x between
// circuits need more to absorb the reordering. On paths of a few ms, the
// drain time alone is a few tens of ms of data: one circuit's relays
// pausing that long (a loaded host) idled all the others.
//
// # The schedule
//
//  1. Circuits: the shell offers them with AddCircuit (at least 6 in the
//     Peersm specification); the window picks Circuits = 5 at random and
//     keeps the others as spares.
//  2. The first GET asks chunk 0 with nb chunks 0, the descriptor, on one
//     circuit (another if it fails). The Descriptor event gives the size,
//     the live flag and the chunks already held.
//  3. Each circuit then gets a block: GET1 (W1) on the first circuit, GET2
//     (W2) on the second, and so on, three queries each, sent at once.
//  4. tm, per GET, is the time from DB_QUERY to its first data; a circuit
//     keeps the least tm of the last 10-20 s (a GET queued behind others
//     has a longer tm that says nothing of the path). Its rate is measured
//     over answers that arrived back to back (the rest of an answer, or a
//     GET that reached the ORDB before the previous answer was sent), so
//     a circuit waiting for the window is not taken for a slow one;
//     decayed with a RateHalfLife time constant. Until such samples
//     exist, the best answer's chunks / (its arrival - its GET) stands
//     in; not after: a relay's token bucket lets one answer through at
//     several times the rate it keeps up.
//  5. Pipelining, the Peersm specification's "send a new GET after the
//     C - c block": a circuit's target is rate x max(1.5 tm,
//     MinPipeline) + 2 GETs in flight; whenever it has less, it gets the
//     next GET. (tm is a least time; on paths of a few ms a busy host
//     turns answers into the next GETs far later than that, so a
//     circuit keeps at least MinPipeline, 50 ms, of its rate in flight.) New GETs go to
//     circuits in order of rate, best first ("next request on the circuit
//     that showed the best rate, then the second..."), so the fastest
//     circuits get the lowest, most urgent, chunks. At the tail of a
//     static content a circuit gets no GET it would finish after all the
//     circuits together would finish what is left, so the last chunks do
//     not wait in a slow circuit's queue.
//  6. Holes: chunks below the highest asked that are free again (a GET
//     that failed, stalled, ended early or was cut) are asked at once, from
//     the first missing chunk ("resumed from where it was"), on the circuit
//     expected to bring them soonest, even past its target.
//  7. Slow: once its rate rests on SlowWarmup of measurements, a circuit
//     below SlowRatio (0.4) x the lower median rate of the active circuits
//     (3 or more measured) is replaced, one at a time: not while a
//     replacement is awaited, so that a set of uneven circuits does not
//     churn. For this check, the time an overdue answer has been awaited
//     counts as time without data, so a circuit that slows down or stops
//     shows it at once. Every active circuit is checked at each answer.
//  8. Stall: a circuit with GETs outstanding and no data for StallFactor x
//     (tm + one GET's transfer time), at least StallMin (FirstDataTimeout
//     before its first answer), is replaced. A circuit is judged against
//     the others: when every circuit awaiting answers has been silent for
//     StallMin/2, the requester's own side is more likely stuck (its
//     process starved, its store busy) than every path at once, so none
//     is replaced until 10 x StallMin after the last data; once data
//     comes again after such a silence, every stall clock (and the
//     overdue time of step 7) starts from there.
//  9. DB_END: FINISHED from the ORDB resumes the rest elsewhere;
//     UNAVAILABLE or DESTROYED also counts against the circuit (replaced
//     at the second in a row without data). MaxFailures failed GETs in a
//     row with no new chunk fail the download (ErrUnavailable).
//  10. A chunk is never asked while held or in flight: a chunk is asked
//     twice only when its GET failed, stalled or was cancelled, and its
//     late answer, if any arrives, is counted in Stats.Dups.
//
// Counters and request IDs: each GET's counter is drawn below 5 (Peersm:
// "random <5"), so an ORDB cannot tell a requester's own query from one
// another ORDB relayed; request IDs are random, nonzero and unique among
// the outstanding GETs.
//
// Seek: the read position moves to the chunk; GETs not wholly inside the
// new window are cancelled; chunks from there come first. A static content
// still ends with every chunk held: at the end the read position wraps to
// what the seek skipped. Each static chunk is delivered once.
//
// Live streams: reading starts at Descriptor.Start (where the ORDB says
// the stream stands) and never ends. DB_END UNAVAILABLE means "not
// published yet": nothing at or past that GET's first chunk is asked for
// LiveRetry, and no circuit is blamed. Chunks more than LiveKeep (4)
// windows behind the read position go to Evict, a window at a time. The
// shell tells the window the newest head it holds (LiveHead): a read
// position more than LiveKeep windows behind it jumps to two windows
// behind the head, and published chunks at the read position answered
// UNAVAILABLE for LiveSkipAfter make it jump a window behind the newest
// head (or, that head being stale too, ask the descriptor again and jump
// to its Start): each jump is a Skipped action, counted in Stats.Skipped.
//
// # Driving a Window (the shell)
//
// One goroutine owns the Window. After every call to AddCircuit, Handle or
// Tick it takes Ready() and carries the actions out in order, then arms a
// timer for Deadline() (zero: none) and calls Tick when it fires.
//
//   - SendGet{Circuit, Query}: send Query as DB_QUERY on Circuit (a stream
//     per GET is simplest: DB_END on it ends exactly that GET). Read the
//     answers; verify each DB_PROOF + DB_DATA against the descriptor's
//     root; store the good chunks, then Handle(Data{Circuit, RequestID,
//     Chunk, Count}); for chunks that fail, Handle(BadChunk{...}) and store
//     nothing. A DB_END: Handle(End{...}). For the descriptor GET (chunk
//     0, nb chunks 0): check that the DB_CONNECTED hashes to the hash_name
//     and its signature holds, then Handle(Descriptor{...}); if it does
//     not, Handle(End{Reason: DBEndDestroyed}).
//   - Cancel{Circuit, RequestID}: send DB_END FINISHED for that GET; drop
//     or hand on whatever still arrives for it.
//   - ReplaceCircuit{Circuit, Why}: destroy the circuit if it still exists;
//     build a new one to an ORDB not in use; AddCircuit when it is ready.
//     The window has forgotten its GETs; no Cancel follows.
//   - Deliver{From, To}: chunks [From, To) are next in reading order and
//     stored: write them out, or let the player read them.
//   - Evict{Below}: a live stream's chunks below Below may be deleted.
//   - Done: every chunk is held and delivered. Fail{Err}: give up (every
//     GET has been cancelled). Nothing follows either.
//
// When a circuit breaks (DESTROY, link closed), Handle(CircuitFailed). When
// the consumer seeks, Handle(Seek). To abandon, Stop.
package window
