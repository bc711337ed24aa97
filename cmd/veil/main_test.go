package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	tests := []struct {
		args   []string
		code   int
		stdout string // substring expected on stdout
		stderr string // substring expected on stderr
	}{
		{args: nil, code: 2, stdout: "commands:"},
		{args: []string{"help"}, code: 0, stdout: "testnet"},
		{args: []string{"version"}, code: 0, stdout: "veil dev"},
		{args: []string{"version", "extra"}, code: 2, stderr: "usage: veil version"},
		{args: []string{"frobnicate"}, code: 2, stderr: `unknown command "frobnicate"`},
		{args: []string{"get", "--help"}, code: 0, stdout: "usage: veil get [flags] HASH"},
		{args: []string{"help", "put"}, code: 0, stdout: "usage: veil put"},
		{args: []string{"get", "--bogus"}, code: 2, stderr: "flag provided but not defined"},
		{args: []string{"get", "abcd"}, code: 2, stderr: "hash_name"},
		{args: []string{"stream", "abcd"}, code: 2, stderr: "hash_name"},
		{args: []string{"help"}, code: 0, stdout: "exit codes:"},
		{args: []string{"config", "default"}, code: 0, stdout: "min_circuits = 4"},
		{args: []string{"testnet", "-nodes", "6"}, code: 1, stderr: "-nodes must be at least 7"},
		{args: []string{"testnet", "--procs", "-nodes", "3"}, code: 1, stderr: "-nodes must be at least 4"},
		{args: []string{"testnet", "-hops", "9"}, code: 1, stderr: "-hops must be between 1 and 8"},
		{args: []string{"testnet", "-file", "/nonexistent/veil"}, code: 1, stderr: "no such file"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, "_"), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tt.args, &out, &errb)
			if code != tt.code {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out.String(), errb.String())
			}
			if !strings.Contains(out.String(), tt.stdout) {
				t.Errorf("stdout %q does not contain %q", out.String(), tt.stdout)
			}
			if !strings.Contains(errb.String(), tt.stderr) {
				t.Errorf("stderr %q does not contain %q", errb.String(), tt.stderr)
			}
		})
	}
}

// Every command answers --help with its own usage line and exit code 0.
func TestEveryCommandHasHelp(t *testing.T) {
	for _, c := range commands() {
		var out, errb bytes.Buffer
		if code := run([]string{c.name, "--help"}, &out, &errb); code != 0 {
			t.Errorf("%s --help: exit %d, stderr %s", c.name, code, errb.String())
		}
		if !strings.Contains(out.String(), "usage: veil "+c.name) {
			t.Errorf("%s --help printed %q", c.name, out.String())
		}
	}
}
