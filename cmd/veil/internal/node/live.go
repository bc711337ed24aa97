package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"veil/proto"
)

// Live publishing: `veil put --live` streams its standard input to the
// node, which appends it to a live stream signed by a key made for it
// (never the node's identity key), signing a new head as each run of
// chunks arrives, and tells its ORDBs which chunks it holds
// (DB_STREAM_INFO) every liveAdvertiseEvery.

// liveAdvertiseEvery is how often a live publisher tells its ORDBs the
// chunks it holds.
const liveAdvertiseEvery = time.Second

// LivePublished is the state of a live publication.
type LivePublished struct {
	Name   proto.HashName
	Chunks uint64 // appended (signed) so far
	Bytes  uint64 // read from the source so far
	// Advertised counts the ORDBs last told the stream's chunks.
	Advertised int
}

// PublishLive appends src to a new live stream until src ends or ctx
// does. started is called with the stream's hash_name before the first
// byte is read; progress (may be nil) after each append.
func (n *Node) PublishLive(ctx context.Context, mime string, src io.Reader, started func(proto.HashName), progress func(LivePublished)) (LivePublished, error) {
	if n.served == nil {
		return LivePublished{}, ErrNotORDB
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return LivePublished{}, err
	}
	defer clear(key)
	lp, err := n.served.NewLivePublisher(key, mime, uint64(n.now().Unix()))
	if err != nil {
		return LivePublished{}, err
	}
	p := LivePublished{Name: lp.Name()}
	n.mu.Lock()
	n.published++
	n.mu.Unlock()
	started(p.Name)
	n.peerCircs.wakeUp()
	var lastAdv time.Time
	advertise := func() {
		told, err := n.peer.AdvertiseStream(ctx, p.Name)
		if err != nil {
			n.log.Debug("advertising a live stream", "err", err)
		}
		p.Advertised, lastAdv = told, time.Now()
	}
	buf := make([]byte, 64<<10)
	for {
		m, rerr := src.Read(buf)
		if m > 0 {
			head, err := lp.Append(ctx, uint32(n.now().Unix()), buf[:m])
			if err != nil {
				return p, fmt.Errorf("appending to the live stream: %w", err)
			}
			p.Chunks, p.Bytes = head.Length, p.Bytes+uint64(m)
			if time.Since(lastAdv) >= liveAdvertiseEvery {
				// What was appended is committed within the store's batch
				// delay; the next advertisement covers what this one misses.
				advertise()
			}
			if progress != nil {
				progress(p)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return p, fmt.Errorf("reading the live source: %w", rerr)
		}
		if err := ctx.Err(); err != nil {
			return p, err
		}
	}
	if err := n.served.Flush(ctx); err != nil {
		return p, err
	}
	advertise()
	return p, nil
}

// LiveEvent is one line of /api/v1/put/live's answer.
type LiveEvent struct {
	HashName   string `json:"hash_name"`
	Chunks     uint64 `json:"chunks"`
	Bytes      uint64 `json:"bytes"`
	Advertised int    `json:"advertised_to"`
	Done       bool   `json:"done,omitempty"`
	Error      string `json:"error,omitempty"`
}

// servePutLive publishes the request body as a live stream, answering
// the hash_name at once and progress as it goes (NDJSON LiveEvent), while
// the body still arrives.
func servePutLive(n *Node, w http.ResponseWriter, r *http.Request) {
	mime := r.Header.Get("Content-Type")
	if mime == "" || len(mime) > proto.MaxMIMEType {
		mime = "video/mp2t"
	}
	rc := http.NewResponseController(w)
	if err := rc.EnableFullDuplex(); err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	ctx, cancel := n.requestContext(r)
	defer cancel()
	enc := json.NewEncoder(w)
	send := func(ev LiveEvent) {
		_ = enc.Encode(ev)
		_ = rc.Flush()
	}
	var last time.Time
	p, err := n.PublishLive(ctx, mime, r.Body, func(name proto.HashName) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		send(LiveEvent{HashName: name.String()})
	}, func(p LivePublished) {
		if time.Since(last) >= time.Second {
			last = time.Now()
			send(LiveEvent{HashName: p.Name.String(), Chunks: p.Chunks, Bytes: p.Bytes, Advertised: p.Advertised})
		}
	})
	if p.Name == (proto.HashName{}) {
		code := http.StatusInternalServerError
		if errors.Is(err, ErrNotORDB) {
			code = http.StatusConflict
		}
		writeError(w, code, err)
		return
	}
	ev := LiveEvent{HashName: p.Name.String(), Chunks: p.Chunks, Bytes: p.Bytes, Advertised: p.Advertised, Done: err == nil}
	if err != nil {
		ev.Error = err.Error()
	}
	send(ev)
}
