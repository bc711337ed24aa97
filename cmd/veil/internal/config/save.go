package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"

	"github.com/BurntSushi/toml"
)

// Encode writes c as a configuration file: every key, at its value. What
// Parse reads back from it is c again (Encode checks it), so a file
// written from it loses nothing; comments are not kept.
func (c Config) Encode() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# veil configuration, written by the node (SAVECONF).\n# `veil config default` shows every key with a comment.\n\n")
	// A nil list would be left out, and read back as its default.
	full := c
	walk(reflect.ValueOf(&full).Elem(), "", func(_ string, f reflect.Value) {
		if f.Kind() == reflect.Slice && f.IsNil() {
			f.Set(reflect.MakeSlice(f.Type(), 0, 0))
		}
	})
	if err := toml.NewEncoder(&b).Encode(full); err != nil {
		return nil, fmt.Errorf("config: encoding: %w", err)
	}
	back, err := decode(b.Bytes())
	if err != nil {
		return nil, fmt.Errorf("config: the encoded file does not read back: %w", err)
	}
	if !reflect.DeepEqual(normal(back), normal(c)) {
		return nil, errors.New("config: the encoded file reads back different values")
	}
	return b.Bytes(), nil
}

// normal makes empty and nil lists equal, as a file cannot tell them apart.
func normal(c Config) Config {
	walk(reflect.ValueOf(&c).Elem(), "", func(_ string, f reflect.Value) {
		if f.Kind() == reflect.Slice && f.Len() == 0 {
			f.Set(reflect.Zero(f.Type()))
		}
	})
	return c
}

// WriteFile writes c to path atomically: a temporary file in the same
// directory, synced, then renamed over path, so a crash leaves the old
// file or the new one, never a part. An existing file keeps its mode; a
// new one is 0600.
func (c Config) WriteFile(path string) error {
	b, err := c.Encode()
	if err != nil {
		return err
	}
	mode := os.FileMode(0o600)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after the rename: nothing there
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("config: writing %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // the rename itself
		d.Close()
	}
	return nil
}
