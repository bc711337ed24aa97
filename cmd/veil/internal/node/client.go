package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// ErrNoNode: no node runs for this data directory (or its API is off).
var ErrNoNode = errors.New("no running node")

// Client talks to a running node's local API.
type Client struct {
	Base   string // http://127.0.0.1:7780
	Cookie string
	HTTP   *http.Client
}

// Dial finds the node running on dataDir: the address it wrote (or
// fallback), the cookie, and checks it answers. ErrNoNode otherwise.
func Dial(ctx context.Context, dataDir, fallback string) (*Client, error) {
	cookie, err := os.ReadFile(filepath.Join(dataDir, CookieFile))
	if err != nil {
		return nil, fmt.Errorf("%w (no %s in %s)", ErrNoNode, CookieFile, dataDir)
	}
	addr := fallback
	if b, err := os.ReadFile(filepath.Join(dataDir, APIAddrFile)); err == nil {
		addr = strings.TrimSpace(string(b))
	}
	if addr == "" {
		return nil, fmt.Errorf("%w (local API off)", ErrNoNode)
	}
	c := &Client{Base: "http://" + addr, Cookie: strings.TrimSpace(string(cookie)), HTTP: &http.Client{}}
	if _, err := c.Status(ctx); err != nil {
		var he *HTTPError
		if errors.As(err, &he) {
			return nil, err
		}
		return nil, fmt.Errorf("%w at %s: %v", ErrNoNode, addr, err)
	}
	return c, nil
}

// HTTPError is an API error answer.
type HTTPError struct {
	Code int
	Msg  string
}

func (e *HTTPError) Error() string { return fmt.Sprintf("node API: %d: %s", e.Code, e.Msg) }

func (c *Client) do(ctx context.Context, method, path, ctype string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set(CookieHeader, c.Cookie)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		defer resp.Body.Close()
		var e struct{ Error string }
		_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e)
		return nil, &HTTPError{Code: resp.StatusCode, Msg: e.Error}
	}
	return resp, nil
}

func (c *Client) getJSON(ctx context.Context, method, path, ctype string, body io.Reader, v any) error {
	resp, err := c.do(ctx, method, path, ctype, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// Status asks the node's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.getJSON(ctx, http.MethodGet, "/api/v1/status", "", nil, &st)
	return st, err
}

// Put publishes body.
func (c *Client) Put(ctx context.Context, mime string, body io.Reader) (PutResult, error) {
	return c.PutAs(ctx, "", mime, body)
}

// PutAs publishes body signed by pseudonym's key ("": the node's
// configured pseudonym, or a key for this content alone).
func (c *Client) PutAs(ctx context.Context, pseudonym, mime string, body io.Reader) (PutResult, error) {
	var r PutResult
	path := "/api/v1/put"
	if pseudonym != "" {
		path += "?pseudonym=" + url.QueryEscape(pseudonym)
	}
	err := c.getJSON(ctx, http.MethodPost, path, mime, body, &r)
	return r, err
}

// Get makes the node fetch name, calling progress with each event; it
// returns the last event's error.
func (c *Client) Get(ctx context.Context, name string, progress func(Event)) error {
	resp, err := c.do(ctx, http.MethodPost, "/api/v1/get/"+name, "", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("node API: bad event: %w", err)
		}
		switch {
		case ev.Error != "":
			if ev.NotFound {
				if ev.Error == ErrNotFound.Error() {
					return ErrNotFound
				}
				return fmt.Errorf("%w (%s)", ErrNotFound, ev.Error)
			}
			return errors.New(ev.Error)
		case ev.Done:
			return nil
		}
		if progress != nil {
			progress(ev)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("node API: the fetch ended without a result")
}

// Content copies the bytes of name to w.
func (c *Client) Content(ctx context.Context, name string, w io.Writer) (int64, error) {
	resp, err := c.do(ctx, http.MethodGet, "/api/v1/content/"+name, "", nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return io.Copy(w, resp.Body)
}

// Providers asks the node to look name up in the DHT (a lookup by that
// node: for tests and debugging) and returns the ORDBs named.
func (c *Client) Providers(ctx context.Context, name string) (Providers, error) {
	var p Providers
	err := c.getJSON(ctx, http.MethodGet, "/api/v1/debug/providers/"+name, "", nil, &p)
	return p, err
}

// Memory asks the node's memory figures (it collects garbage first).
func (c *Client) Memory(ctx context.Context) (Memory, error) {
	var m Memory
	err := c.getJSON(ctx, http.MethodGet, "/api/v1/debug/memory", "", nil, &m)
	return m, err
}

// HeapProfile copies the node's heap profile (pprof format) to w.
func (c *Client) HeapProfile(ctx context.Context, w io.Writer) error {
	return c.copyTo(ctx, "/api/v1/debug/pprof/heap", w)
}

// CPUProfile profiles the node for secs seconds (1..60) and copies the
// profile (pprof format) to w.
func (c *Client) CPUProfile(ctx context.Context, secs int, w io.Writer) error {
	return c.copyTo(ctx, fmt.Sprintf("/api/v1/debug/pprof/profile?seconds=%d", secs), w)
}

func (c *Client) copyTo(ctx context.Context, path string, w io.Writer) error {
	resp, err := c.do(ctx, http.MethodGet, path, "", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	return err
}

// Stream makes the node start the gateway's fetch of name and calls fn
// with each buffering report until ctx ends, fn returns false, or the
// content is complete (the last report has Done).
func (c *Client) Stream(ctx context.Context, name string, fn func(StreamEvent) bool) error {
	resp, err := c.do(ctx, http.MethodPost, "/api/v1/stream/"+name, "", nil)
	if err != nil {
		var he *HTTPError
		if errors.As(err, &he) && he.Code == http.StatusNotFound {
			return fmt.Errorf("%w (%s)", ErrNotFound, he.Msg)
		}
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var ev StreamEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("node API: bad stream event: %w", err)
		}
		if !fn(ev) || ev.Done {
			return nil
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return sc.Err()
}

// PutLive publishes body as a live stream until body ends: started gets
// the hash_name as soon as the node made it, progress (may be nil) the
// node's reports.
func (c *Client) PutLive(ctx context.Context, mime string, body io.Reader, started func(string), progress func(LiveEvent)) error {
	resp, err := c.do(ctx, http.MethodPost, "/api/v1/put/live", mime, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	first := true
	for sc.Scan() {
		var ev LiveEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("node API: bad live event: %w", err)
		}
		if first {
			started(ev.HashName)
			first = false
		}
		switch {
		case ev.Error != "":
			return errors.New(ev.Error)
		case ev.Done:
			return nil
		}
		if progress != nil {
			progress(ev)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("node API: the live publication ended without a result")
}
