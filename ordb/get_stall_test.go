package ordb

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"veil/chunkstore"
	"veil/proto"
	"veil/window"
)

// pipeCircuits is GetCircuits over in-memory streams, each served by a
// real Server, except the circuits silent says: their ORDB reads the
// queries and never answers.
type pipeCircuits struct {
	t      *testing.T
	pub    *chunkstore.Store
	silent func(id window.CircuitID) bool

	mu       sync.Mutex
	next     window.CircuitID
	replaced []window.Why
	wg       sync.WaitGroup
}

func (p *pipeCircuits) OpenStream(ctx context.Context, id window.CircuitID) (CellStream, error) {
	client, server := streamPair()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if p.silent(id) {
			buf := make([]byte, proto.RelayDataSize)
			for {
				if _, _, err := server.ReadCell(buf); err != nil {
					return
				}
			}
		}
		(&Server{Store: p.pub}).Serve(server)
	}()
	return client, nil
}

func (p *pipeCircuits) Replace(ctx context.Context, id window.CircuitID, why window.Why) (window.CircuitID, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.replaced = append(p.replaced, why)
	p.next++
	return p.next, nil
}

// A circuit whose ORDB goes silent is replaced as stalled once the window's
// timer says so (virtual time: the test does not wait 15 s), and the
// download completes through the others.
func TestGetStalledCircuit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pub, name, data := publish(t, 498*2000)
		st := openStore(t, "cache.db")
		pc := &pipeCircuits{t: t, pub: pub, next: 100, silent: func(id window.CircuitID) bool { return id == 3 }}
		var out bytes.Buffer
		start := time.Now()
		g, err := NewGet(GetConfig{Name: name, Store: st, Circuits: pc, Initial: []window.CircuitID{1, 2, 3, 4, 5},
			Deliver: func(_ uint64, b []byte) error { out.Write(b); return nil }})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		pc.wg.Wait()
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatal("content differs")
		}
		if len(pc.replaced) != 1 || pc.replaced[0] != window.WhyStalled {
			t.Fatalf("replaced %v, want the silent circuit replaced as stalled", pc.replaced)
		}
		// The silent circuit holds its GETs until the stall timeout: the
		// first answer is awaited for FirstDataTimeout.
		if fd := window.DefaultConfig(name).FirstDataTimeout; took < fd {
			t.Fatalf("took %v of virtual time, less than the %v stall timeout", took, fd)
		}
	})
}
