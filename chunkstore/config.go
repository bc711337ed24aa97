package chunkstore

import (
	"fmt"
	"time"

	"veil/proto"
)

// Config configures a Store. Start from DefaultConfig.
type Config struct {
	// Path is the bbolt file.
	Path string
	// LockTimeout bounds the wait for the file lock another Store holds.
	LockTimeout time.Duration
	// NoSync skips fsync on commit. Only for tests: a crash may then lose
	// or corrupt committed batches.
	NoSync bool
	// BatchBytes is the chunk bytes the writer gathers before committing.
	BatchBytes int
	// BatchDelay is how long the writer waits for more ranges after the
	// first one of a batch.
	BatchDelay time.Duration
	// QueueLen bounds the verified ranges waiting for the writer; Ingest
	// blocks (honouring its context) when it is full.
	QueueLen int
	// WindowBytes is the download window (the Peersm specification's
	// ~500 kB); a live stream keeps the newest 4 x WindowBytes of chunks.
	WindowBytes int
	// OnProgress, if set, is called from the writer goroutine when a static
	// content first reaches a quarter: p is DB_INFO's P (0 = 25% ...
	// 3 = 100%). It must not block.
	OnProgress func(name proto.HashName, p int)
	// MaxHeadAge, when set, makes Ingest refuse a live range whose head
	// was signed more than this long before Now (ErrStaleHead): a
	// requester following a stream as it is made cannot be frozen on old
	// heads by an ORDB replaying them, even before it saw a newer one.
	// 0 (the default) accepts heads of any age, as an archive reader must.
	MaxHeadAge time.Duration
	// Now is the clock MaxHeadAge is measured on; nil means time.Now.
	Now func() time.Time
}

// DefaultConfig returns the defaults for a store at path.
func DefaultConfig(path string) Config {
	return Config{
		Path:        path,
		LockTimeout: 500 * time.Millisecond,
		BatchBytes:  1 << 20,
		BatchDelay:  10 * time.Millisecond,
		QueueLen:    64,
		WindowBytes: 500_000,
	}
}

// Validate reports the first bad setting.
func (c Config) Validate() error {
	switch {
	case c.Path == "":
		return fmt.Errorf("%w: Path is empty", ErrConfig)
	case c.LockTimeout <= 0:
		return fmt.Errorf("%w: LockTimeout %v <= 0 would wait forever", ErrConfig, c.LockTimeout)
	case c.BatchBytes < proto.ChunkSize:
		return fmt.Errorf("%w: BatchBytes %d < one chunk", ErrConfig, c.BatchBytes)
	case c.BatchDelay < 0:
		return fmt.Errorf("%w: BatchDelay %v < 0", ErrConfig, c.BatchDelay)
	case c.QueueLen < 1:
		return fmt.Errorf("%w: QueueLen %d < 1", ErrConfig, c.QueueLen)
	case c.MaxHeadAge < 0:
		return fmt.Errorf("%w: MaxHeadAge %v < 0", ErrConfig, c.MaxHeadAge)
	case c.WindowBytes < proto.ChunkSize:
		return fmt.Errorf("%w: WindowBytes %d < one chunk", ErrConfig, c.WindowBytes)
	}
	return nil
}

// keepChunks is how many of a live stream's newest chunks are kept.
func (c Config) keepChunks() uint64 {
	return 4 * uint64((c.WindowBytes+proto.ChunkSize-1)/proto.ChunkSize)
}
