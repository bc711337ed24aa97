package circuits

import (
	"time"

	"veil/circuits/link"
)

// TokenBucket limits a byte rate; see link.TokenBucket, where a node's
// links apply it (link.WriteLimit).
type TokenBucket = link.TokenBucket

// NewTokenBucket returns a full bucket for rate bytes per second with
// bursts of burst bytes, at now.
func NewTokenBucket(rate, burst int, now time.Time) *TokenBucket {
	return link.NewTokenBucket(rate, burst, now)
}
