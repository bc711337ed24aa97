package node_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"veil/chunkstore"
	"veil/cmd/veil/internal/node"
	"veil/cmd/veil/internal/procnet"
)

// TestChaos runs 20 `veil node` processes, puts 100 MB at one and gets it
// at another while 30 % of the relays (neither the bridge, the publisher
// nor the getter) are SIGKILLed at random moments and restarted. The get
// must end with the bytes put, and once every process has stopped, every
// node's stores must reopen with every chunk they hold verifying.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("20 processes and 100 MB: run without -short (.ci/run does)")
	}
	const nNodes = 20
	tn := startNet(t, nNodes)
	pn, dirs, procs := tn.pn, tn.dirs, tn.procs

	data := make([]byte, 100<<20)
	rand.Read(data)
	src := filepath.Join(pn.Root, "content")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	put := spawn(t, pn, "put", "", "put", "--data-dir", dirs[1], src)
	if err := put.Wait(120 * time.Second); err != nil {
		t.Fatalf("put: %v\n%s", err, pn.Log("put"))
	}
	hash := regexp.MustCompile(`(?m)^[0-9a-f]{40}$`).FindString(pn.Log("put"))
	if hash == "" {
		t.Fatalf("put printed no hash_name:\n%s", pn.Log("put"))
	}
	getter := nNodes - 1
	out := filepath.Join(pn.Root, "got")
	get := spawn(t, pn, "get", "", "get", "--data-dir", dirs[getter], "-o", out, hash)

	// The victims: 30 % of the relays, each SIGKILLed once at a random
	// moment of the get and restarted on its data directory.
	relays := make([]int, 0, nNodes-3)
	for i := 2; i < getter; i++ {
		relays = append(relays, i)
	}
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 16))
	rng.Shuffle(len(relays), func(i, j int) { relays[i], relays[j] = relays[j], relays[i] })
	victims := relays[:(len(relays)*3+9)/10]
	t.Logf("victims: %v", victims)
	var mu sync.Mutex // guards procs[i] of the victims and restarts
	restarts := 0
	chaosDone := make(chan struct{})
	go func() {
		defer close(chaosDone)
		for _, v := range victims {
			select {
			case <-get.Done():
				return
			case <-time.After(time.Duration(200+rng.IntN(1500)) * time.Millisecond):
			}
			mu.Lock()
			procs[v].Stop(syscall.SIGKILL, 10*time.Second)
			p, _, err := pn.Node(fmt.Sprintf("node%d-r", v), dirs[v], "--bridge", tn.bridge)
			if err == nil {
				procs[v] = p
				restarts++
			} else {
				t.Errorf("restarting node%d: %v", v, err)
			}
			mu.Unlock()
		}
	}()
	if err := get.Wait(150 * time.Second); err != nil {
		t.Fatalf("get under chaos: %v\n%s", err, pn.Log("get"))
	}
	<-chaosDone
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes (%v), want the %d put", len(got), err, len(data))
	}
	mu.Lock()
	t.Logf("get of 100 MB complete across %d SIGKILLs and restarts of relays", restarts)
	mu.Unlock()

	// Every process stops; every store reopens and verifies.
	for _, p := range procs {
		p.Stop(syscall.SIGTERM, 20*time.Second)
	}
	checked := 0
	for i, dir := range dirs {
		for _, file := range []string{node.CacheFile, node.ServedFile} {
			path := filepath.Join(dir, file)
			if _, err := os.Stat(path); err != nil {
				continue
			}
			s, err := chunkstore.Open(chunkstore.DefaultConfig(path))
			if err != nil {
				t.Fatalf("node%d %s does not reopen: %v", i, file, err)
			}
			names, err := s.Names()
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range names {
				n, err := s.Check(name)
				if err != nil {
					t.Errorf("node%d %s %v: %v after %d chunks", i, file, name, err, n)
				}
				checked += int(n)
			}
			s.Close()
		}
	}
	if checked < len(data)/498 {
		t.Fatalf("only %d chunks verified, fewer than the content's", checked)
	}
	t.Logf("every store reopened; %d chunks verify", checked)
}

var _ = procnet.NodeArgs
