package window

import (
	"errors"
	"fmt"
	"time"

	"veil/proto"
)

// Constants the protocol fixes.
const (
	// ChunkSize is the size of every chunk but a static content's last.
	ChunkSize = proto.ChunkSize
	// MaxChunks is the number of chunks a content may have: DB_QUERY's
	// chunk nb is at most 4 bytes.
	MaxChunks = 1 << 32
)

// Config tunes a Window. DefaultConfig gives the values the Peersm
// specification suggests; Validate says which field is wrong.
type Config struct {
	// HashName is the content asked for; every GET carries it.
	HashName proto.HashName
	// Circuits is how many circuits download at once (5 in the Peersm
	// specification, which keeps at least one more as a spare).
	Circuits int
	// ChunksPerGet is the chunks one GET (one DB_QUERY) asks for. An ORDB
	// serves at most 64 per query today (ordb.DefaultMaxChunks), and one
	// answer must fit the 64-bit mask a GET keeps, so it is at most 64.
	ChunksPerGet int
	// BlockGets is how many GETs make a block W1..W5: a circuit's first
	// block is sent at once, which is also how its rate is first measured
	// (the second and third answers arrive back to back).
	BlockGets int
	// MinWindow is the window in chunks before anything is measured, and
	// its floor: 5 blocks of 3 x 64 chunks = 960 chunks, about 478 kB, the
	// Peersm specification's "~500 kB".
	MinWindow int
	// MinPipeline: a circuit keeps at least this long of its rate in
	// flight, whatever its tm. tm is the least time to first data; on
	// paths of a few ms, the time an answer takes to turn into the next
	// GET at the ORDB (scheduling on a busy requester or relay) is often
	// ten times that, and a pipeline of 1.5 tm runs dry.
	MinPipeline time.Duration
	// MaxWindow caps the window in chunks: the window grows to cover the
	// measured bandwidth-delay product of the circuits (see doc.go), and
	// never past this.
	MaxWindow int
	// StallFactor: a circuit with GETs outstanding and no data for
	// StallFactor x (tm + one GET's transfer time) has stalled.
	StallFactor float64
	// StallMin is the shortest stall timeout, whatever tm says.
	StallMin time.Duration
	// FirstDataTimeout bounds the wait for a circuit's first answer, before
	// any tm is known (an ORDB may have to look the content up first).
	FirstDataTimeout time.Duration
	// SlowRatio: a circuit whose rate is below SlowRatio x the median rate
	// of the active circuits is replaced.
	SlowRatio float64
	// SlowWarmup is how much back-to-back arrival time a circuit's rate
	// must rest on before it can be judged slow.
	SlowWarmup time.Duration
	// RateHalfLife is the time constant of the rate estimate.
	RateHalfLife time.Duration
	// MaxFailures: this many failed GETs (stalls, DB_END, dead or lying
	// circuits) in a row with no new chunk, and the download fails.
	MaxFailures int
	// LiveRetry is how long a live stream waits before asking again for
	// chunks an ORDB did not have yet.
	LiveRetry time.Duration
	// LiveKeep is how many MinWindows of a live stream are kept behind the
	// read position (4 in the Peersm specification); older chunks are
	// handed to Evict.
	LiveKeep int
	// LiveSkipAfter: when the published chunks at a live stream's read
	// position have been answered DB_END UNAVAILABLE (asked again every
	// LiveRetry) for this long, they are gone from what is kept (the
	// fetch fell behind): reading jumps ahead, to a window behind the
	// newest chunk known.
	LiveSkipAfter time.Duration
}

// DefaultConfig returns the defaults for content name.
func DefaultConfig(name proto.HashName) Config {
	return Config{
		HashName:         name,
		Circuits:         5,
		ChunksPerGet:     64,
		BlockGets:        3,
		MinWindow:        5 * 3 * 64,
		MinPipeline:      50 * time.Millisecond,
		MaxWindow:        16 << 20 / ChunkSize,
		StallFactor:      4,
		StallMin:         200 * time.Millisecond,
		FirstDataTimeout: 15 * time.Second,
		SlowRatio:        0.4,
		SlowWarmup:       150 * time.Millisecond,
		RateHalfLife:     500 * time.Millisecond,
		MaxFailures:      30,
		LiveRetry:        500 * time.Millisecond,
		LiveKeep:         4,
		LiveSkipAfter:    5 * time.Second,
	}
}

// ErrConfig is wrapped by every Validate error.
var ErrConfig = errors.New("window: bad config")

// Validate checks the fields and names the first bad one.
func (c Config) Validate() error {
	bad := func(field string, v any) error { return fmt.Errorf("%w: %s = %v", ErrConfig, field, v) }
	switch {
	case c.Circuits < 1:
		return bad("Circuits", c.Circuits)
	case c.ChunksPerGet < 1 || c.ChunksPerGet > 64:
		return bad("ChunksPerGet", c.ChunksPerGet)
	case c.BlockGets < 1:
		return bad("BlockGets", c.BlockGets)
	case c.MinWindow < c.ChunksPerGet:
		return bad("MinWindow", c.MinWindow)
	case c.MaxWindow < c.MinWindow:
		return bad("MaxWindow", c.MaxWindow)
	case c.MinPipeline < 0:
		return bad("MinPipeline", c.MinPipeline)
	case c.StallFactor < 1:
		return bad("StallFactor", c.StallFactor)
	case c.StallMin <= 0:
		return bad("StallMin", c.StallMin)
	case c.FirstDataTimeout <= 0:
		return bad("FirstDataTimeout", c.FirstDataTimeout)
	case c.SlowRatio < 0 || c.SlowRatio >= 1:
		return bad("SlowRatio", c.SlowRatio)
	case c.SlowWarmup < 0:
		return bad("SlowWarmup", c.SlowWarmup)
	case c.RateHalfLife <= 0:
		return bad("RateHalfLife", c.RateHalfLife)
	case c.MaxFailures < 1:
		return bad("MaxFailures", c.MaxFailures)
	case c.LiveRetry <= 0:
		return bad("LiveRetry", c.LiveRetry)
	case c.LiveKeep < 1:
		return bad("LiveKeep", c.LiveKeep)
	case c.LiveSkipAfter <= 0:
		return bad("LiveSkipAfter", c.LiveSkipAfter)
	}
	return nil
}
