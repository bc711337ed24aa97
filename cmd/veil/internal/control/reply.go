package control

import (
	"strconv"
	"strings"
)

// Reply codes veil uses (control-spec §4).
const (
	codeOK            = 250
	codeUnavailable   = 451 // resource exhausted
	codeSyntax        = 500 // syntax error: protocol
	codeUnknownCmd    = 510
	codeUnimplemented = 511
	codeBadArgs       = 512 // syntax error in command argument
	codeUnknownArg    = 552 // unrecognized entity
	codeAuthRequired  = 514
	codeAuthFailed    = 515
	codeFailed        = 550 // unspecified error
	codeNotAvailable  = 551 // internal error / not available
	codeBadConfValue  = 553 // invalid configuration value
	codeAsync         = 650
)

// reply is the lines of one answer; the last one ends it.
type reply []replyLine

type replyLine struct {
	code int
	text string
	data *string // set: text is "KEY=" and the data block follows
}

func okReply() reply { return reply{{code: codeOK, text: "OK"}} }

func errReply(code int, text string) reply { return reply{{code: code, text: oneLine(text)}} }

// add appends a line.
func (r *reply) add(code int, text string) {
	*r = append(*r, replyLine{code: code, text: oneLine(text)})
}

// addValue appends KEY=VALUE, as a data block when the value spans lines.
func (r *reply) addValue(code int, key, value string) {
	if strings.ContainsAny(value, "\r\n") {
		v := value
		*r = append(*r, replyLine{code: code, text: oneLine(key) + "=", data: &v})
		return
	}
	r.add(code, key+"="+value)
}

// appendTo writes the reply in wire form: "CODE-" for every line but the
// last, "CODE+" for data lines, "CODE " for the last.
func (r reply) appendTo(b []byte) []byte {
	for i, l := range r {
		b = strconv.AppendInt(b, int64(l.code), 10)
		switch {
		case l.data != nil:
			b = append(b, '+')
		case i == len(r)-1:
			b = append(b, ' ')
		default:
			b = append(b, '-')
		}
		b = append(b, l.text...)
		b = append(b, '\r', '\n')
		if l.data != nil {
			b = appendData(b, *l.data)
			if i == len(r)-1 { // a data line cannot end a reply
				b = strconv.AppendInt(b, int64(l.code), 10)
				b = append(b, " OK\r\n"...)
			}
		}
	}
	return b
}

// appendData writes a data block: lines with a leading "." doubled, CRLF
// line ends, then a line holding only ".".
func appendData(b []byte, data string) []byte {
	data = strings.ReplaceAll(data, "\r\n", "\n")
	data = strings.TrimSuffix(data, "\n")
	if data != "" {
		for _, l := range strings.Split(data, "\n") {
			l = strings.ReplaceAll(l, "\r", " ")
			if strings.HasPrefix(l, ".") {
				b = append(b, '.')
			}
			b = append(b, l...)
			b = append(b, '\r', '\n')
		}
	}
	return append(b, '.', '\r', '\n')
}
