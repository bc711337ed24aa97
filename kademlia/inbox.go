package kademlia

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"veil/proto"
)

// inboxBatch is how many RPCs Run takes from the inbox per wake.
const inboxBatch = 64

// fairInbox holds the RPCs received and not yet handled, one queue per
// peer (per /24 or /48 with bySubnet), and hands them out round robin
// over the peers: a peer that
// floods gets one RPC handled per turn like every other peer. It is
// bounded in all (size) and per peer (perPeer); when full, a newcomer
// pushes out the oldest RPC of the peer with most waiting, unless that
// is its own sender. Safe for concurrent use: Deliver pushes from link
// goroutines, Run pops.
type fairInbox struct {
	mu       sync.Mutex // guards the fields below
	queues   map[inboxKey][]inbound
	ring     []inboxKey // peers with RPCs waiting, in turn order
	n        int
	size     int
	perPeer  int
	bySubnet bool

	ready   chan struct{} // cap 1: something is waiting
	dropped atomic.Uint64
}

// inboxKey is whom an RPC counts against: its sender's /24 (/48) when
// the inbox is kept by subnet and the address is known, else its sender.
type inboxKey struct {
	net netip.Prefix
	id  proto.NodeID
}

// newFairInbox returns an inbox of size RPCs, perPeer at most for one
// peer. bySubnet makes every sender of one /24 (/48) one peer: identities
// are free, subnets are not.
func newFairInbox(size, perPeer int, bySubnet bool) *fairInbox {
	return &fairInbox{
		queues: make(map[inboxKey][]inbound),
		size:   size, perPeer: perPeer, bySubnet: bySubnet,
		ready: make(chan struct{}, 1),
	}
}

func (b *fairInbox) key(in inbound) inboxKey {
	if b.bySubnet && in.ip.IsValid() {
		return inboxKey{net: subnet(in.ip)}
	}
	return inboxKey{id: in.from}
}

func (b *fairInbox) push(in inbound) error {
	k := b.key(in)
	b.mu.Lock()
	q := b.queues[k]
	if len(q) >= b.perPeer {
		b.mu.Unlock()
		b.dropped.Add(1)
		return ErrInboxFull
	}
	if b.n >= b.size {
		var longest inboxKey
		most := 0
		for _, id := range b.ring {
			if l := len(b.queues[id]); l > most {
				longest, most = id, l
			}
		}
		if most <= len(q)+1 {
			// The sender is (about to be) the greediest itself.
			b.mu.Unlock()
			b.dropped.Add(1)
			return ErrInboxFull
		}
		lq := b.queues[longest]
		lq[0] = inbound{}
		b.queues[longest] = lq[1:]
		b.n--
		b.dropped.Add(1)
	}
	if len(q) == 0 {
		b.ring = append(b.ring, k)
	}
	b.queues[k] = append(q, in)
	b.n++
	b.mu.Unlock()
	b.rearm()
	return nil
}

// pop takes the next peer's oldest RPC; false if none waits.
func (b *fairInbox) pop() (inbound, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.ring) == 0 {
		return inbound{}, false
	}
	id := b.ring[0]
	q := b.queues[id]
	in := q[0]
	q[0] = inbound{}
	q = q[1:]
	b.n--
	b.ring = b.ring[1:]
	if len(q) == 0 {
		delete(b.queues, id) // the emptied slice goes with it
	} else {
		b.queues[id] = q
		b.ring = append(b.ring, id)
	}
	if len(b.ring) == 0 {
		b.ring = nil // let the backing array go
	}
	return in, true
}

// rearm signals ready if RPCs are waiting.
func (b *fairInbox) rearm() {
	b.mu.Lock()
	waiting := b.n > 0
	b.mu.Unlock()
	if waiting {
		select {
		case b.ready <- struct{}{}:
		default:
		}
	}
}
