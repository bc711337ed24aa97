//go:build race

package node_test

// raceEnabled: the test binary runs under the race detector, and so do
// the veil processes it builds.
const raceEnabled = true
