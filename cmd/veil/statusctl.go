package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"veil/cmd/veil/internal/config"
	"veil/cmd/veil/internal/control"
	"veil/cmd/veil/internal/node"
)

// errNoControl: no node with a control port runs on the data directory.
var errNoControl = errors.New("no control port")

// statusViaControl reads the node's status through its control port
// (GETINFO veil/status), authenticating with the cookie.
func statusViaControl(ctx context.Context, cfg config.Config) (node.Status, error) {
	var st node.Status
	dir := cfg.DataDirOrDefault()
	addr, err := control.ReadAddr(dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return st, fmt.Errorf("control port address: %w", err)
		}
		if _, err := os.Stat(filepath.Join(dir, control.CookieFile)); err != nil || cfg.Control.Listen == "" {
			return st, errNoControl
		}
		addr = cfg.Control.Listen
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := control.Dial(dctx, addr, dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return st, errNoControl // no cookie: no node with a control port
		}
		return st, fmt.Errorf("control port at %s: %w", addr, err)
	}
	defer c.Close()
	v, err := c.GetInfo("veil/status")
	if err != nil {
		return st, fmt.Errorf("control port at %s: %w", addr, err)
	}
	if err := json.Unmarshal([]byte(v), &st); err != nil {
		return st, fmt.Errorf("control port at %s: status: %w", addr, err)
	}
	return st, nil
}
