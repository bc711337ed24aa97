package onion

import "errors"

// Errors of the handshake and the layered crypto. Callers compare with
// errors.Is; the circuit layer turns them into DESTROY reasons.
var (
	ErrHandshakeType    = errors.New("onion: unknown handshake type")
	ErrWrongNode        = errors.New("onion: handshake names another node")
	ErrUnknownKey       = errors.New("onion: handshake names an onion key we do not hold")
	ErrBadAuth          = errors.New("onion: handshake authentication failed")
	ErrBadPoint         = errors.New("onion: handshake point rejected")
	ErrState            = errors.New("onion: handshake used out of order")
	ErrSendmeTag        = errors.New("onion: SENDME tag does not match a cell we sent")
	ErrUnexpectedSendme = errors.New("onion: SENDME without outstanding cells")
	ErrWindow           = errors.New("onion: peer sent past its window")
)
