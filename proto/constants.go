package proto

// Sizes the wire fixes. They follow Tor's link protocol 4+ and the Peersm
// specification; changing any of them breaks compatibility with every peer.
const (
	CircIDSize      = 4                                 // link cell circuit ID
	CellHeaderSize  = CircIDSize + 1                    // CircID + Command
	CellPayloadSize = 509                               // payload of a fixed-size cell
	CellSize        = CellHeaderSize + CellPayloadSize  // 514: every fixed cell on a link
	VarHeaderSize   = CellHeaderSize + 2                // CircID + Command + Length
	RelayHeaderSize = 1 + 2 + 2 + 4 + 2                 // command, recognized, stream, digest, length
	RelayDataSize   = CellPayloadSize - RelayHeaderSize // 498
	ChunkSize       = RelayDataSize                     // the chunk size of the whole system
	IDSize          = 20                                // node IDs and hash_names: 160 bits
	OnionKeySize    = 32                                // X25519 public key
	IdentityKeySize = 32                                // Ed25519 public key
	SignatureSize   = 64                                // Ed25519 signature
	DigestSize      = 4                                 // running digest in a relay cell
)

// Limits veil chose. They bound what a peer can make us allocate.
const (
	// MaxVarPayload bounds a variable-length cell (DHT RPCs travel in them).
	MaxVarPayload = 8192
	// MaxDBMessage bounds one DB_* message reassembled from consecutive
	// relay cells of a stream.
	MaxDBMessage = 1 << 20
)
