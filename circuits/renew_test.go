package circuits

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// Renew (Tor's NEWNYM): the pool offers only new circuits at once and
// fills again; an idle old circuit closes, a busy one stays open until
// its traffic stops.
func TestPoolRenew(t *testing.T) {
	noLeaks(t)
	pn := newPoolNet(t, 8, func(c *PoolConfig) { c.CheckInterval = 200 * time.Millisecond })
	pn.pool.BuildTunnels(3)
	go pn.pool.Run(t.Context())
	old := pn.ready(t)
	busy := old[0]
	s, err := busy.OpenStream(t.Context(), "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The busy circuit carries a cell every 20 ms (check intervals are
	// 200 ms) until stop.
	stop, wrote := make(chan struct{}), make(chan error, 1)
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				wrote <- nil
				return
			case <-t.C:
				if _, err := s.Write([]byte("ping")); err != nil {
					wrote <- err
					return
				}
			}
		}
	}()

	pn.pool.Renew()
	for _, c := range pn.pool.FindCircuits() {
		if slices.Contains(old, c) {
			t.Fatal("an old circuit is still offered after Renew")
		}
	}
	if err := pn.pool.TunnelData(old[1], "echo", []byte("x")); !errors.Is(err, ErrNotInPool) {
		t.Fatalf("TunnelData on an old circuit: %v", err)
	}
	fresh := pn.ready(t)
	for _, c := range fresh {
		if slices.Contains(old, c) {
			t.Fatal("the pool refilled with an old circuit")
		}
	}
	// The idle old circuits close; the busy one stays open meanwhile.
	for _, c := range old[1:] {
		waitClosed(t, c)
	}
	time.Sleep(600 * time.Millisecond) // three more check intervals of traffic
	close(stop)
	if err := <-wrote; err != nil {
		t.Fatalf("the busy old circuit was closed while in use: %v", err)
	}
	waitClosed(t, busy) // idle now
}
