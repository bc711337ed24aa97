package chunkstore

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"veil/chunkstore/content"
	"veil/proto"
)

// The crash test re-executes this test binary as a writer (running only
// TestCrashWriterChild, selected by crashEnv), SIGKILLs it mid-stream, and
// checks the store it left behind.
const (
	crashEnv    = "VEIL_CHUNKSTORE_CRASH_WRITER"
	crashChunks = 8_000 // ~4 MB: more than a writer gets through before its kill
	crashWindow = 200
)

func TestCrashWriterChild(t *testing.T) {
	spec := os.Getenv(crashEnv)
	if spec == "" {
		t.Skip("only runs as the subprocess of TestSIGKILLMidStream")
	}
	path, rest, _ := strings.Cut(spec, ";")
	mode, seedText, _ := strings.Cut(rest, ";")
	seed, _ := strconv.ParseUint(seedText, 10, 64)
	cfg := DefaultConfig(path)
	cfg.LockTimeout = 5 * time.Second
	cfg.BatchBytes = 64 << 10
	s, err := Open(cfg)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	ctx := context.Background()
	if mode == "publish" {
		// Publish an endless-looking content: the kill lands mid-way.
		fmt.Println("publishing")
		src := io.LimitReader(rand.NewChaCha8([32]byte{1}), 1<<30)
		_, _, err := s.Publish(ctx, testKey(9), "video/mp4", 1, &lineEvery{r: src, every: 256 << 10})
		fmt.Println("published", err)
		time.Sleep(time.Hour) // until the parent's SIGKILL
	}
	if mode == "live" {
		// An endless live stream: the kill always lands mid-stream.
		pub, err := s.NewLivePublisher(testKey(8), "video/webm", seed)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		fmt.Println("name", pub.Name())
		rnd := rand.NewChaCha8([32]byte{byte(seed)})
		p := make([]byte, 50*content.ChunkSize+17)
		for k := 1; ; k++ {
			rnd.Read(p)
			if _, err := pub.Append(ctx, uint32(k), p); err != nil {
				fmt.Println("error", err)
				os.Exit(2)
			}
			fmt.Println("queued")
			if k%5 == 0 {
				if err := s.Flush(ctx); err != nil {
					fmt.Println("error", err)
					os.Exit(2)
				}
				h, _ := s.Head(pub.Name())
				fmt.Println("flushed", h.Length)
			}
		}
	}
	f := newFixture(t, crashChunks*content.ChunkSize-100, seed)
	if _, err := s.PutDescriptor(f.d); err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	have, err := s.Have(f.name)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	held := func(i uint64) bool { return i/64 < uint64(len(have)) && have[i/64]&(1<<(i%64)) != 0 }
	n := uint64(len(f.chunks))
	windows := 0
	for lo := uint64(0); lo < n; lo += crashWindow {
		hi := min(lo+crashWindow, n)
		if held(lo) && held(hi-1) {
			continue
		}
		if err := s.Ingest(ctx, f.name, f.rng(t, lo, hi)); err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		_, count, _ := s.Progress(f.name)
		fmt.Println("queued", count)
		if windows++; windows%5 == 0 {
			if err := s.Flush(ctx); err != nil {
				fmt.Println("error", err)
				os.Exit(2)
			}
			_, count, _ := s.Progress(f.name)
			fmt.Println("flushed", count)
		}
	}
	s.Flush(ctx)
	fmt.Println("done")
	time.Sleep(time.Hour) // until the parent's SIGKILL
}

// lineEvery prints a line to stdout every so many bytes read through it.
type lineEvery struct {
	r     io.Reader
	every int
	n     int
}

func (l *lineEvery) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if l.n += n; l.n >= l.every {
		l.n = 0
		fmt.Println("read")
	}
	return n, err
}

func TestSIGKILLMidStream(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns 20 writer processes")
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	rnd := rand.New(rand.NewPCG(5, 5))
	// Three writers take turns: ingest (a static content of its own, with
	// proofs, in windows), live (an endless live stream) and publish (an
	// endless static publication). Every content is rechecked after every
	// kill.
	var fixtures []*fixture
	var durable []uint64 // per fixture: chunks its writer saw committed
	type stream struct {
		name    proto.HashName
		durable uint64 // head length its writer saw committed
	}
	var streams []*stream
	for iter := 0; iter < 20; iter++ {
		mode := []string{"ingest", "live", "publish"}[iter%3]
		seed := uint64(1000 + iter)
		if mode == "ingest" {
			fixtures = append(fixtures, newFixture(t, crashChunks*content.ChunkSize-100, seed))
			durable = append(durable, 0)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashWriterChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s;%s;%d", crashEnv, path, mode, seed))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(out)
		killAfter := 2 + rnd.IntN(20) // lines: the kill lands while ranges queue and commit
		var st *stream
		for seen := 0; seen < killAfter && lines.Scan(); {
			line := lines.Text()
			word, arg, _ := strings.Cut(line, " ")
			switch word {
			case "error":
				t.Fatalf("iteration %d: writer: %s", iter, line)
			case "name":
				name, err := proto.ParseHashName(arg)
				if err != nil {
					t.Fatal(err)
				}
				st = &stream{name: name}
				streams = append(streams, st)
			case "flushed":
				c, _ := strconv.ParseUint(arg, 10, 64)
				if st != nil {
					st.durable = c
				} else {
					durable[len(durable)-1] = c
				}
				seen++
			case "queued", "read":
				seen++
			case "done":
				seen = killAfter
			}
		}
		if iter == 0 {
			// While the writer lives, a second opener fails fast.
			cfg := DefaultConfig(path)
			cfg.LockTimeout = 50 * time.Millisecond
			if _, err := Open(cfg); !errors.Is(err, ErrLocked) {
				t.Fatalf("open while the writer runs: %v", err)
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("iteration %d: writer ended with %v, not by SIGKILL", iter, err)
		}

		s := openTest(t, path, nil)
		names, err := s.Names()
		if err != nil {
			t.Fatal(err)
		}
		if want := len(fixtures) + len(streams); len(names) != want {
			t.Fatalf("iteration %d: %d contents, want %d (an unfinished publication survived?)", iter, len(names), want)
		}
		for _, name := range names {
			if _, err := s.Check(name); err != nil {
				t.Fatalf("iteration %d: %v", iter, err)
			}
		}
		for _, st := range streams {
			h, err := s.Head(st.name)
			if err != nil || h.Length < st.durable {
				t.Fatalf("iteration %d: live head %d, but the writer saw %d committed (%v)", iter, h.Length, st.durable, err)
			}
		}
		for k, f := range fixtures {
			_, count, err := s.Progress(f.name)
			if err != nil {
				t.Fatalf("iteration %d: content %d: %v", iter, k, err)
			}
			if count < durable[k] {
				t.Fatalf("iteration %d: %d chunks held, but the writer saw %d committed", iter, count, durable[k])
			}
			if k < len(fixtures)-1 || mode != "ingest" {
				continue // Check above verified it against its root
			}
			// Every stored chunk is the publisher's.
			have, _ := s.Have(f.name)
			for i := range uint64(len(f.chunks)) {
				if i/64 < uint64(len(have)) && have[i/64]&(1<<(i%64)) != 0 {
					c, _, err := s.Chunk(f.name, i)
					if err != nil || !bytes.Equal(c, f.chunks[i]) {
						t.Fatalf("iteration %d: chunk %d differs (%v)", iter, i, err)
					}
				}
			}
			t.Logf("iteration %d (ingest): %d of %d chunks held after SIGKILL, %d seen committed", iter, count, len(f.chunks), durable[k])
		}
		if st != nil {
			h, _ := s.Head(st.name)
			t.Logf("iteration %d (live): head %d after SIGKILL, %d seen committed", iter, h.Length, st.durable)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
