package circuits

import (
	"errors"
	"testing"
	"time"

	"veil/proto"
)

// FuzzRelayCellsAtLastHop sends arbitrary relay cells (command, stream ID,
// data), properly sealed, to the last hop of a circuit over in-memory
// links: the last hop never panics or wedges, and afterwards the circuit
// either still carries an echo stream or has been destroyed, and the
// relay lets it go.
func FuzzRelayCellsAtLastHop(f *testing.F) {
	f.Add([]byte{byte(proto.RelayBegin), 0, 1, 5, 4, 'e', 'c', 'h', 'o'})
	f.Add([]byte{byte(proto.RelayData), 0, 1, 3, 'a', 'b', 'c', byte(proto.RelayEnd), 0, 1, 1, 6})
	f.Add([]byte{byte(proto.RelaySendme), 0, 0, 0, byte(proto.RelayTruncate), 0, 0, 0})
	f.Add([]byte{byte(proto.RelayDBQuery), 0, 2, 4, 0, 0, 0, 9, byte(proto.RelayDrop), 0, 0, 0})
	// Every input builds a circuit over the same link: thousands a
	// second, which the per-link CREATE2 bucket would rightly refuse.
	nodes := newMemNodes(f, 2, func(c *SwitchConfig) { c.CreateRate, c.CreateBurst = 1e9, 1<<30 })
	f.Fuzz(func(t *testing.T, in []byte) {
		c := build(t, nodes[0], nodes[1])
		defer c.Close()
		for k := 0; k < 8 && len(in) >= 4; k++ {
			cmd, sid, n := proto.RelayCommand(in[0]), uint16(in[1])<<8|uint16(in[2]), int(in[3])
			if sid >= 0x7000 && sid < lastHopStreams {
				sid -= 0x1000 // 0x7000.. are the check stream's below
			}
			in = in[4:]
			n = min(n, len(in))
			data := in[:n]
			in = in[n:]
			if !cmd.Known() {
				continue
			}
			if err := c.ep.sendControl(0, false, cmd, sid, data); err != nil {
				break // destroyed already
			}
		}
		checkAliveOrDestroyed(t, c, nodes[1])
	})
}

// FuzzRelayCellsAtOrigin is FuzzRelayCellsAtLastHop the other way: a
// hostile last hop sends arbitrary sealed relay cells back to the origin.
func FuzzRelayCellsAtOrigin(f *testing.F) {
	f.Add([]byte{byte(proto.RelayBegin), 0x80, 1, 5, 4, 'e', 'c', 'h', 'o', byte(proto.RelayData), 0x80, 1, 1, 'x'})
	f.Add([]byte{byte(proto.RelayConnected), 0, 1, 0, byte(proto.RelayEnd), 0, 1, 1, 6})
	f.Add([]byte{byte(proto.RelayExtended2), 0, 0, 2, 0, 0, byte(proto.RelayTruncated), 0, 0, 1, 9})
	f.Add([]byte{byte(proto.RelaySendme), 0, 1, 0, byte(proto.RelayDBData), 0, 3, 2, 0, 0})
	// Every input builds a circuit over the same link: thousands a
	// second, which the per-link CREATE2 bucket would rightly refuse.
	nodes := newMemNodes(f, 2, func(c *SwitchConfig) { c.CreateRate, c.CreateBurst = 1e9, 1<<30 })
	f.Fuzz(func(t *testing.T, in []byte) {
		c := build(t, nodes[0], nodes[1])
		defer c.Close()
		var rc *relayCirc
		nodes[1].sw.mu.RLock()
		for _, q := range nodes[1].sw.circs {
			if r, ok := q.(*relayCirc); ok {
				rc = r
			}
		}
		nodes[1].sw.mu.RUnlock()
		if rc == nil {
			t.Fatal("no circuit at the last hop")
		}
		for k := 0; k < 8 && len(in) >= 4; k++ {
			cmd, sid, n := proto.RelayCommand(in[0]), uint16(in[1])<<8|uint16(in[2]), int(in[3])
			if sid >= 0x7000 && sid < lastHopStreams {
				sid -= 0x1000 // keep off the check stream's ID
			}
			in = in[4:]
			n = min(n, len(in))
			data := in[:n]
			in = in[n:]
			if !cmd.Known() {
				continue
			}
			if err := rc.ep.sendControl(0, false, cmd, sid, data); err != nil {
				break
			}
		}
		checkAliveOrDestroyed(t, c, nodes[1])
	})
}

// checkAliveOrDestroyed asserts what must hold after hostile cells: the
// circuit either still echoes, byte for byte, on a new stream, or it was
// destroyed; a circuit that does neither (wedged, or silently dropping
// data) fails. Either way the relay then releases it.
func checkAliveOrDestroyed(t *testing.T, c *Circuit, relay *cnode) {
	t.Helper()
	c.ep.mu.Lock()
	c.ep.nextStream = 0x7000 // an ID the hostile cells did not use
	c.ep.mu.Unlock()
	err := echoCheck(c, 100, 7)
	if errors.Is(err, errEchoDiffers) {
		t.Fatal(err) // wrong bytes are a failure, destroyed or not
	}
	if err != nil {
		select {
		case <-c.Done():
		case <-time.After(circWait):
			t.Fatalf("the circuit neither echoes (%v) nor was destroyed", err)
		}
	}
	c.Close()
	waitUntil(t, "the relay to drop the circuit", func() bool { return relay.sw.Joined() == 0 })
}
