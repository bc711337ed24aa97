package circuits

import (
	"context"
	"sync"
	"testing"
)

// Path may be called from any goroutine while the circuit's own goroutine
// adds and removes hops (Extend, Truncate): under -race, a Path that reads
// the hop list without the lock its writer holds fails here.
func TestPathWhileExtendingAndTruncating(t *testing.T) {
	noLeaks(t)
	nodes := newMemNodes(t, 4)
	c := build(t, nodes[0], nodes[1])
	defer c.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			p := c.Path()
			for i, d := range p {
				if d.ID != nodes[1+i].id.ID {
					t.Errorf("hop %d of the path is %s", i, d.ID.Short())
					return
				}
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), circWait)
	defer cancel()
	for range 3 {
		for _, n := range nodes[2:] {
			if err := c.Extend(ctx, n.desc); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Truncate(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if n := len(c.Path()); n != 1 {
		t.Fatalf("path of %d hops after truncating to 1", n)
	}
}
