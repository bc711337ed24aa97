// Package gateway is the node's streaming gateway: GET and HEAD
// /content/<hash_name> over HTTP for players and browsers, with Range
// requests (RFC 9110: one range, a suffix or an open one; 416 for ranges
// past the end), served while the download runs. A request at offset X
// tells the download to fetch from X first (Content.Want); the bytes
// served are only verified chunks, read from the node's store as they
// arrive. A live stream is served as a growing response (chunked, no
// Content-Length), from where the node started reading it.
//
// The package knows the node only through Source, so that it can be
// tested alone; Guard is the HTTP server's defence against web pages.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"veil/proto"
)

// ContentPrefix is the path of content URLs: ContentPrefix + hash_name.
const ContentPrefix = "/content/"

// DefaultLookupTimeout bounds the wait for a content's descriptor (the
// node's ORDBs finding a provider) before a request is answered 404.
const DefaultLookupTimeout = 20 * time.Second

// ErrNotFound is what Source.Content returns when no provider was found.
var ErrNotFound = errors.New("gateway: no provider found for this hash_name")

// Source is what the gateway needs of the node.
type Source interface {
	// Content returns the content name once its descriptor is known,
	// starting its download if the node does not hold it (one download
	// per content, shared by every request). It returns ErrNotFound when
	// no provider is found, or ctx's error.
	Content(ctx context.Context, name proto.HashName) (Content, error)
}

// Content is one content the gateway serves.
type Content interface {
	// Size is the content's size in bytes, or -1 for a live stream.
	Size() int64
	// MIME is the type its descriptor gives.
	MIME() string
	// Want says a reader needs the bytes from offset next: the download,
	// if one runs, fetches from there first.
	Want(offset int64)
	// NewReader returns a reader of the content's verified bytes, at 0
	// for a static content and where the node starts reading a live
	// stream. A Read of bytes not yet held waits for them until ctx ends.
	NewReader(ctx context.Context) (io.ReadSeeker, error)
}

// Config configures a Handler.
type Config struct {
	Source        Source
	LookupTimeout time.Duration // 0: DefaultLookupTimeout
	Log           *slog.Logger  // nil: discard
}

// Handler serves ContentPrefix. Mount it behind a Guard.
type Handler struct {
	cfg Config

	mu  sync.Mutex // guards pos
	pos map[proto.HashName]Position
}

// Position is where the gateway last served a content: the play position
// of the player reading it, for the buffering `veil stream` shows.
type Position struct {
	Offset  int64     // the next byte the reader gets
	Readers int       // requests being served now
	At      time.Time // when Offset moved last
}

// New returns a Handler.
func New(cfg Config) *Handler {
	if cfg.LookupTimeout <= 0 {
		cfg.LookupTimeout = DefaultLookupTimeout
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Handler{cfg: cfg, pos: map[proto.HashName]Position{}}
}

// Position returns where content name was last served; ok is false if
// it never was.
func (h *Handler) Position(name proto.HashName) (p Position, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p, ok = h.pos[name]
	return p, ok
}

// URL is the content URL of name on the server at addr (host:port),
// carrying its capability token.
func URL(addr, cookie string, name proto.HashName) string {
	return "http://" + addr + ContentPrefix + name.String() + "?" + TokenParam + "=" + Token(cookie, name.String())
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, fmt.Errorf("gateway: method %s: want GET or HEAD", r.Method))
		return
	}
	seg, ok := strings.CutPrefix(r.URL.Path, ContentPrefix)
	name, err := proto.ParseHashName(seg)
	if !ok || err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("gateway: %q is not a hash_name (want %d hex digits)", seg, 2*proto.IDSize))
		return
	}
	lctx, cancel := context.WithTimeout(r.Context(), h.cfg.LookupTimeout)
	c, err := h.cfg.Source.Content(lctx, name)
	cancel()
	switch {
	case err == nil:
	case r.Context().Err() != nil:
		return // the client left
	case errors.Is(err, ErrNotFound) || errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusNotFound, fmt.Errorf("gateway: %v: no provider found within %v", name, h.cfg.LookupTimeout))
		return
	default:
		writeError(w, http.StatusBadGateway, err)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", contentType(c.MIME()))
	// A publisher chooses the type: a text/html content must not run as
	// a page of this origin (it would share it with the local API).
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Content-Security-Policy", "sandbox")
	hd.Set("Referrer-Policy", "no-referrer") // the URL carries a token
	if c.Size() < 0 {
		h.serveLive(w, r, name, c)
		return
	}
	h.serveStatic(w, r, name, c)
}

// contentType is the descriptor's MIME type if it parses as one, and
// application/octet-stream otherwise.
func contentType(t string) string {
	if t == "" {
		return "application/octet-stream"
	}
	if _, _, err := mime.ParseMediaType(t); err != nil {
		return "application/octet-stream"
	}
	return t
}

func (h *Handler) serveStatic(w http.ResponseWriter, r *http.Request, name proto.HashName, c Content) {
	size := c.Size()
	hd := w.Header()
	etag := `"` + name.String() + `"` // a hash_name names one content forever
	hd.Set("Accept-Ranges", "bytes")
	hd.Set("ETag", etag)
	rng, partial, err := parseRange(r.Header.Get("Range"), size)
	if ir := r.Header.Get("If-Range"); ir != "" && ir != etag {
		partial, err = false, nil // not the representation the client holds
	}
	if errors.Is(err, errUnsatisfiable) {
		hd.Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
		writeError(w, http.StatusRequestedRangeNotSatisfiable, fmt.Errorf("gateway: range %q past the end (%d bytes)", r.Header.Get("Range"), size))
		return
	}
	code := http.StatusOK
	if !partial {
		rng = byteRange{0, size}
	} else {
		code = http.StatusPartialContent
		hd.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", rng.start, rng.end-1, size))
	}
	hd.Set("Content-Length", strconv.FormatInt(rng.end-rng.start, 10))
	if r.Method == http.MethodHead || rng.end == rng.start {
		w.WriteHeader(code)
		return
	}
	c.Want(rng.start)
	rd, err := c.NewReader(r.Context())
	if err == nil {
		_, err = rd.Seek(rng.start, io.SeekStart)
	}
	if err != nil {
		hd.Del("Content-Length")
		hd.Del("Content-Range")
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	w.WriteHeader(code)
	_ = http.NewResponseController(w).Flush() // the headers now: a player waits for them
	if err := h.copy(w, rd, name, rng.start, rng.end-rng.start); err != nil && r.Context().Err() == nil {
		h.cfg.Log.Info("gateway: serving a range", "hash_name", name.String(), "err", err)
	}
}

// serveLive serves a live stream as one growing response from where the
// node starts reading it, until the client leaves or the stream fails
// (a reader that fell behind the chunks kept gets ErrEvicted).
func (h *Handler) serveLive(w http.ResponseWriter, r *http.Request, name proto.HashName, c Content) {
	w.Header().Set("Accept-Ranges", "none")
	w.Header().Set("Cache-Control", "no-store")
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	rd, err := c.NewReader(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	off, _ := rd.Seek(0, io.SeekCurrent)
	w.WriteHeader(http.StatusOK)
	_ = http.NewResponseController(w).Flush()
	if err := h.copy(w, rd, name, off, -1); err != nil && r.Context().Err() == nil {
		h.cfg.Log.Info("gateway: serving a live stream", "hash_name", name.String(), "err", err)
	}
}

// readAhead bounds the reads waiting to be written.
const readAhead = 64

var bufPool = sync.Pool{New: func() any { return new([16 << 10]byte) }}

// copy writes n bytes of rd (n < 0: until rd fails) from offset off,
// recording the position as it goes. A goroutine reads (a read waits for
// chunks not yet held); what it read is flushed to the client whenever
// the next read is not there yet, so nothing held waits in a buffer.
func (h *Handler) copy(w http.ResponseWriter, rd io.Reader, name proto.HashName, off, n int64) error {
	type read struct {
		b   *[16 << 10]byte
		n   int
		err error
	}
	reads := make(chan read, readAhead)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for left := n; left != 0; {
			b := bufPool.Get().(*[16 << 10]byte)
			p := b[:]
			if left > 0 && int64(len(p)) > left {
				p = p[:left]
			}
			m, err := rd.Read(p)
			if left > 0 {
				left -= int64(m)
			}
			if err == io.EOF && left <= 0 {
				err = nil
			}
			select {
			case reads <- read{b, m, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
		close(reads)
	}()
	rc := http.NewResponseController(w)
	h.track(name, off, 1)
	defer h.track(name, -1, -1)
	dirty := false
	for {
		var r read
		var ok bool
		select {
		case r, ok = <-reads:
		default:
			if dirty {
				if err := rc.Flush(); err != nil {
					return err
				}
				dirty = false
			}
			r, ok = <-reads
		}
		if !ok {
			return rc.Flush()
		}
		if r.n > 0 {
			_, err := w.Write(r.b[:r.n])
			bufPool.Put(r.b)
			if err != nil {
				return err
			}
			dirty = true
			off += int64(r.n)
			h.track(name, off, 0)
		}
		if r.err != nil {
			return r.err
		}
	}
}

// track moves name's position to off (off < 0: unchanged) and adds
// readers to its reader count.
func (h *Handler) track(name proto.HashName, off int64, readers int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.pos[name]
	if off >= 0 {
		p.Offset, p.At = off, time.Now()
	}
	p.Readers += readers
	h.pos[name] = p
}
