package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
)

// TorrentTrailer is the HTTP trailer of POST /api/v1/torrent: empty when
// every byte was sent and checked, else the error that cut the body
// short.
const TorrentTrailer = "Veil-Error"

// registerTorrentAPI adds POST /api/v1/torrent?target=T[&file=P|&index=N]:
// the node fetches the torrent through its own ORDB circuits and
// facilitators and streams the checked bytes back.
func registerTorrentAPI(mux *http.ServeMux, n *Node) {
	mux.HandleFunc("POST /api/v1/torrent", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		req := TorrentRequest{Target: q.Get("target"), File: q.Get("file")}
		if s := q.Get("index"); s != "" {
			i, err := strconv.Atoi(s)
			if err != nil || i < 0 {
				writeError(w, http.StatusBadRequest, fmt.Errorf("index %q: want a file index 0, 1, ...", s))
				return
			}
			req.UseIndex, req.Index = true, i
		}
		ctx, cancel := n.requestContext(r)
		defer cancel()
		w.Header().Set("Trailer", TorrentTrailer)
		sw := &startWriter{w: w}
		_, err := n.FetchTorrent(ctx, req, sw)
		if !sw.started {
			if err == nil {
				w.Header().Set("Content-Type", "application/octet-stream")
				w.WriteHeader(http.StatusOK)
				return
			}
			code := http.StatusBadGateway
			if errors.Is(err, ErrBadTarget) {
				code = http.StatusBadRequest
			}
			writeError(w, code, err)
			return
		}
		if err != nil {
			w.Header().Set(TorrentTrailer, err.Error())
		}
	})
}

// startWriter sends the status line with the first byte.
type startWriter struct {
	w       http.ResponseWriter
	started bool
}

func (s *startWriter) Write(p []byte) (int, error) {
	if !s.started {
		s.started = true
		s.w.Header().Set("Content-Type", "application/octet-stream")
		s.w.WriteHeader(http.StatusOK)
	}
	n, err := s.w.Write(p)
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
	return n, err
}

// Torrent asks the node to fetch a torrent (magnet link or infohash) and
// copies the checked bytes to w.
func (c *Client) Torrent(ctx context.Context, req TorrentRequest, w io.Writer) error {
	path := "/api/v1/torrent?target=" + url.QueryEscape(req.Target)
	if req.File != "" {
		path += "&file=" + url.QueryEscape(req.File)
	}
	if req.UseIndex {
		path += "&index=" + strconv.Itoa(req.Index)
	}
	resp, err := c.do(ctx, http.MethodPost, path, "", bytes.NewReader(nil))
	if err != nil {
		var he *HTTPError
		if errors.As(err, &he) {
			return errors.New(he.Msg)
		}
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return err
	}
	if msg := resp.Trailer.Get(TorrentTrailer); msg != "" {
		return errors.New(msg)
	}
	return nil
}
