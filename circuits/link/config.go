package link

import (
	"fmt"
	"net/netip"
	"time"

	"veil/proto"
)

// Config bounds what links may cost and how they keep alive. The zero
// value is not usable; start from DefaultConfig.
type Config struct {
	// MaxLinks bounds open links plus handshakes in progress. Inbound
	// connections beyond it are closed at once; Get fails.
	MaxLinks int
	// MaxInbound and MaxOutbound bound the links (and handshakes) each
	// side opened, so that peers dialing in cannot take the slots this
	// node needs to dial out (to extend circuits, to reach the DHT), and
	// the reverse. MaxLinks bounds their sum.
	MaxInbound, MaxOutbound int
	// MaxHandshakes bounds the inbound handshakes in progress: a
	// connection accepted beyond it is closed at once, so stalled
	// handshakes cost at most this many goroutines and buffers, each for
	// at most HandshakeTimeout.
	MaxHandshakes int
	// MaxInboundPerSubnet bounds the inbound links and handshakes from one
	// IPv4 /24 or IPv6 /48, so that one network cannot take every inbound
	// slot. 0: no bound (test networks on one machine).
	MaxInboundPerSubnet int
	// SourceAddr, if valid, is the IP this node dials from (a host with
	// several addresses; tests simulating networks on 127.0.0.0/8).
	SourceAddr netip.Addr
	// SendQueueBytes bounds the bytes queued on one link and not yet
	// written; SendCell blocks while the queue is full.
	SendQueueBytes int
	// HandshakeTimeout bounds TCP connect plus the TLS handshake.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a link on which nothing (not even padding)
	// arrived for this long.
	IdleTimeout time.Duration
	// KeepaliveInterval: a writer that sent nothing for this long sends a
	// PADDING cell. Must be well below IdleTimeout.
	KeepaliveInterval time.Duration
	// WriteTimeout closes a link whose peer accepts no bytes for this long.
	WriteTimeout time.Duration
	// CloseTimeout bounds how long Close spends flushing queued cells
	// before cutting the connection.
	CloseTimeout time.Duration
	// ReadBufferSize and WriteBufferSize size each link's buffers. Larger
	// write buffers put more cells in each TLS record and write call.
	ReadBufferSize  int
	WriteBufferSize int
	// WriteLimit, if set, paces the writes of every link that shares it
	// (nil: unlimited), 16 KiB at a time (pacePiece), so that the links
	// take turns.
	WriteLimit *WriteLimit
}

// DefaultConfig returns the settings veil runs with.
func DefaultConfig() Config {
	return Config{
		MaxLinks:      1024,
		MaxInbound:    768,
		MaxOutbound:   512,
		MaxHandshakes: 64,
		// Several nodes may share a household's or a provider's /24;
		// sixteen is far above what an honest network needs to one
		// relay, far below what would crowd others out.
		MaxInboundPerSubnet: 16,
		SendQueueBytes:      256 << 10, // ~500 cells
		HandshakeTimeout:    10 * time.Second,
		IdleTimeout:         3 * time.Minute,
		KeepaliveInterval:   time.Minute,
		WriteTimeout:        time.Minute,
		CloseTimeout:        2 * time.Second,
		ReadBufferSize:      64 << 10,
		WriteBufferSize:     64 << 10,
	}
}

// Validate reports the first setting that cannot work, naming it.
func (c Config) Validate() error {
	switch {
	case c.MaxLinks < 1:
		return fmt.Errorf("link: config: MaxLinks %d must be at least 1", c.MaxLinks)
	case c.MaxInbound < 1:
		return fmt.Errorf("link: config: MaxInbound %d must be at least 1", c.MaxInbound)
	case c.MaxOutbound < 1:
		return fmt.Errorf("link: config: MaxOutbound %d must be at least 1", c.MaxOutbound)
	case c.MaxHandshakes < 1:
		return fmt.Errorf("link: config: MaxHandshakes %d must be at least 1", c.MaxHandshakes)
	case c.MaxInboundPerSubnet < 0:
		return fmt.Errorf("link: config: MaxInboundPerSubnet %d must not be negative (0: no bound)", c.MaxInboundPerSubnet)
	case c.SendQueueBytes < proto.VarHeaderSize+proto.MaxVarPayload:
		return fmt.Errorf("link: config: SendQueueBytes %d must hold the largest cell (%d)", c.SendQueueBytes, proto.VarHeaderSize+proto.MaxVarPayload)
	case c.HandshakeTimeout <= 0:
		return fmt.Errorf("link: config: HandshakeTimeout %v must be positive", c.HandshakeTimeout)
	case c.IdleTimeout <= 0:
		return fmt.Errorf("link: config: IdleTimeout %v must be positive", c.IdleTimeout)
	case c.KeepaliveInterval <= 0 || c.KeepaliveInterval*2 > c.IdleTimeout:
		return fmt.Errorf("link: config: KeepaliveInterval %v must be positive and at most half of IdleTimeout %v", c.KeepaliveInterval, c.IdleTimeout)
	case c.WriteTimeout <= 0:
		return fmt.Errorf("link: config: WriteTimeout %v must be positive", c.WriteTimeout)
	case c.CloseTimeout <= 0:
		return fmt.Errorf("link: config: CloseTimeout %v must be positive", c.CloseTimeout)
	case c.ReadBufferSize < proto.VarHeaderSize+proto.MaxVarPayload:
		return fmt.Errorf("link: config: ReadBufferSize %d must hold the largest cell (%d)", c.ReadBufferSize, proto.VarHeaderSize+proto.MaxVarPayload)
	case c.WriteBufferSize < proto.CellSize:
		return fmt.Errorf("link: config: WriteBufferSize %d must hold a cell (%d)", c.WriteBufferSize, proto.CellSize)
	}
	return nil
}
