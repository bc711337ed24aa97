//go:build !race

package node

// underRace: the test binary runs under the race detector.
const underRace = false
