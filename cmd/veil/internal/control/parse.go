package control

import (
	"errors"
	"fmt"
	"strings"
)

// Limits of what a controller may send. Tor accepts long lines (LOADCONF
// bodies); veil has no command that needs more than a few keys.
const (
	// MaxLineLen bounds one command line, CRLF included.
	MaxLineLen = 16 << 10
	// MaxDataLen bounds the data block of a "+" command, which veil reads
	// only to skip it.
	MaxDataLen = 64 << 10
	// maxArgs bounds the arguments of one command.
	maxArgs = 256
)

// Parse errors; the server answers them with 512 or 510.
var (
	ErrEmptyLine    = errors.New("control: empty command line")
	ErrBadKeyword   = errors.New("control: command keyword must be letters")
	ErrUnterminated = errors.New("control: unterminated quoted string")
	ErrBadEscape    = errors.New("control: bad escape in quoted string")
	ErrTooManyArgs  = errors.New("control: too many arguments")
	ErrBadChar      = errors.New("control: control character in command")
)

// Command is one command line: its keyword (upper-cased, since keywords
// are case-insensitive) and the rest of the line.
type Command struct {
	Keyword string
	Args    string
	// Data is set for a "+KEYWORD" command, which a data block follows.
	Data bool
}

// ParseCommand splits a command line (without its line ending).
func ParseCommand(line string) (Command, error) {
	var c Command
	if strings.HasPrefix(line, "+") {
		c.Data, line = true, line[1:]
	}
	kw, args, _ := strings.Cut(line, " ")
	if kw == "" {
		return c, ErrEmptyLine
	}
	for i := 0; i < len(kw); i++ {
		b := kw[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b == '_') {
			return c, ErrBadKeyword
		}
	}
	for i := 0; i < len(args); i++ {
		if b := args[i]; b < 0x20 && b != '\t' || b == 0x7f {
			return c, ErrBadChar
		}
	}
	c.Keyword, c.Args = strings.ToUpper(kw), strings.TrimLeft(args, " ")
	return c, nil
}

// Arg is one argument: a word, a "quoted string", or KEY=VALUE with a
// word or quoted value.
type Arg struct {
	Key      string // the word, or the key of KEY=VALUE; "" for a bare quoted string
	Value    string // the unescaped value
	HasValue bool   // KEY=VALUE, or a bare quoted string
	Quoted   bool   // the value was a quoted string
}

// ParseArgs splits arguments at spaces, unescaping quoted strings.
func ParseArgs(s string) ([]Arg, error) {
	var out []Arg
	for {
		s = strings.TrimLeft(s, " ")
		if s == "" {
			return out, nil
		}
		if len(out) == maxArgs {
			return nil, ErrTooManyArgs
		}
		var a Arg
		if s[0] == '"' {
			v, rest, err := unquote(s)
			if err != nil {
				return nil, err
			}
			a.Value, a.HasValue, a.Quoted, s = v, true, true, rest
		} else {
			end := strings.IndexAny(s, " =")
			if end < 0 {
				end = len(s)
			}
			a.Key, s = s[:end], s[end:]
			if strings.HasPrefix(s, "=") {
				s = s[1:]
				a.HasValue = true
				if strings.HasPrefix(s, "\"") {
					v, rest, err := unquote(s)
					if err != nil {
						return nil, err
					}
					a.Value, a.Quoted, s = v, true, rest
				} else {
					end := strings.IndexByte(s, ' ')
					if end < 0 {
						end = len(s)
					}
					a.Value, s = s[:end], s[end:]
				}
			}
		}
		if s != "" && s[0] != ' ' {
			return nil, fmt.Errorf("control: argument runs into %q", trunc(s))
		}
		out = append(out, a)
	}
}

// unquote reads the quoted string at the start of s (C escapes: \\ \" \n
// \r \t and three octal digits) and returns its value and what follows.
func unquote(s string) (string, string, error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			return b.String(), s[i+1:], nil
		case '\\':
			i++
			if i >= len(s) {
				return "", "", ErrUnterminated
			}
			switch e := s[i]; e {
			case '\\', '"', '\'':
				b.WriteByte(e)
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			default:
				if e < '0' || e > '7' || i+2 >= len(s) || !isOctal(s[i+1]) || !isOctal(s[i+2]) {
					return "", "", ErrBadEscape
				}
				v := int(e-'0')<<6 | int(s[i+1]-'0')<<3 | int(s[i+2]-'0')
				if v > 0xff {
					return "", "", ErrBadEscape
				}
				b.WriteByte(byte(v))
				i += 2
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", "", ErrUnterminated
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// Quote makes s a quoted string as the control protocol writes it.
func Quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\', '"':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if c < 0x20 || c == 0x7f {
				fmt.Fprintf(&b, `\%03o`, c)
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// oneLine makes free text safe for one reply line.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
