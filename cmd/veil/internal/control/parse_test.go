package control

import (
	"reflect"
	"testing"
)

func TestParseCommand(t *testing.T) {
	for line, want := range map[string]Command{
		"getinfo version":    {Keyword: "GETINFO", Args: "version"},
		"QUIT":               {Keyword: "QUIT"},
		"+LOADCONF":          {Keyword: "LOADCONF", Data: true},
		"SETCONF  a=b":       {Keyword: "SETCONF", Args: "a=b"},
		"AUTHENTICATE \"x\"": {Keyword: "AUTHENTICATE", Args: `"x"`},
	} {
		if got, err := ParseCommand(line); err != nil || got != want {
			t.Errorf("%q: %+v %v, want %+v", line, got, err, want)
		}
	}
	for line, want := range map[string]error{"": ErrEmptyLine, " x": ErrEmptyLine, "GET1NFO": ErrBadKeyword, "GETINFO a\x00": ErrBadChar, "GETINFO \x7f": ErrBadChar} {
		if _, err := ParseCommand(line); err != want {
			t.Errorf("%q: %v, want %v", line, err, want)
		}
	}
}

func TestParseArgs(t *testing.T) {
	for in, want := range map[string][]Arg{
		"":                   nil,
		"a b":                {{Key: "a"}, {Key: "b"}},
		`k=v q="x y\"z"`:     {{Key: "k", Value: "v", HasValue: true}, {Key: "q", Value: `x y"z`, HasValue: true, Quoted: true}},
		`"\101\n\t\\"`:       {{Value: "A\n\t\\", HasValue: true, Quoted: true}},
		"k=":                 {{Key: "k", HasValue: true}},
		`SAFECOOKIE "nonce"`: {{Key: "SAFECOOKIE"}, {Value: "nonce", HasValue: true, Quoted: true}},
	} {
		got, err := ParseArgs(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%q: %+v %v, want %+v", in, got, err, want)
		}
	}
	// Every truncation of a quoted string is an error, as are bad escapes
	// and a quoted string running into a word.
	full := `k="a\"b\101"`
	for i := 3; i < len(full); i++ {
		if _, err := ParseArgs(full[:i]); err == nil {
			t.Errorf("truncated %q accepted", full[:i])
		}
	}
	for _, bad := range []string{`"\x"`, `"\400"`, `"\1"`, `"a"b`, `k="a"b`} {
		if _, err := ParseArgs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	many := ""
	for range maxArgs + 1 {
		many += "a "
	}
	if _, err := ParseArgs(many); err != ErrTooManyArgs {
		t.Errorf("%d arguments: %v", maxArgs+1, err)
	}
}
