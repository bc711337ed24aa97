//go:build !linux

package kademlia

// hugeHeap does nothing outside Linux (see the Linux version).
func hugeHeap(size int) int { return 0 }
