package control

import (
	"context"
	"log/slog"
	"math"
	"strings"
	"sync/atomic"
)

// LogTee is a slog.Handler that passes records to the handler it wraps
// and also to the control port, as NOTICE, WARN and ERR events (INFO and
// DEBUG for slog's Info... levels below). Make it with NewLogTee, log
// through it, and give it to the Server (Config.LogTee).
type LogTee struct {
	inner  slog.Handler
	st     *teeState
	prefix string // the attributes and groups added by WithAttrs/WithGroup, as text
	group  string
}

// teeState is shared by a LogTee and the handlers derived from it.
type teeState struct {
	min  atomic.Int64                   // the lowest slog level a controller wants; MaxInt64: none
	sink atomic.Pointer[func(logEvent)] // the server's, once it runs
}

type logEvent struct {
	severity string
	msg      string
}

// NewLogTee wraps inner.
func NewLogTee(inner slog.Handler) *LogTee {
	t := &LogTee{inner: inner, st: &teeState{}}
	t.st.min.Store(math.MaxInt64)
	return t
}

func (t *LogTee) wanted(l slog.Level) bool {
	return int64(l) >= t.st.min.Load() && t.st.sink.Load() != nil
}

// Enabled reports whether the inner handler or a controller wants level l.
func (t *LogTee) Enabled(ctx context.Context, l slog.Level) bool {
	return t.inner.Enabled(ctx, l) || t.wanted(l)
}

// Handle passes r on. A controller gets one line: the message and the
// attributes as key=value.
func (t *LogTee) Handle(ctx context.Context, r slog.Record) error {
	if t.wanted(r.Level) {
		var b strings.Builder
		b.WriteString(r.Message)
		b.WriteString(t.prefix)
		r.Attrs(func(a slog.Attr) bool {
			appendAttr(&b, t.group, a)
			return true
		})
		if sink := t.st.sink.Load(); sink != nil {
			(*sink)(logEvent{severity: severityOf(r.Level), msg: oneLine(b.String())})
		}
	}
	if t.inner.Enabled(ctx, r.Level) {
		return t.inner.Handle(ctx, r)
	}
	return nil
}

func appendAttr(b *strings.Builder, group string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		g := group + a.Key + "."
		if a.Key == "" {
			g = group
		}
		for _, x := range a.Value.Group() {
			appendAttr(b, g, x)
		}
		return
	}
	b.WriteByte(' ')
	b.WriteString(group + a.Key)
	b.WriteByte('=')
	v := a.Value.String()
	if v == "" || strings.ContainsAny(v, " \"=") {
		v = Quote(v)
	}
	b.WriteString(v)
}

// WithAttrs returns a handler that adds attrs to every record.
func (t *LogTee) WithAttrs(attrs []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(t.prefix)
	for _, a := range attrs {
		appendAttr(&b, t.group, a)
	}
	return &LogTee{inner: t.inner.WithAttrs(attrs), st: t.st, prefix: b.String(), group: t.group}
}

// WithGroup returns a handler that puts later attributes in group name.
func (t *LogTee) WithGroup(name string) slog.Handler {
	if name == "" {
		return t
	}
	return &LogTee{inner: t.inner.WithGroup(name), st: t.st, prefix: t.prefix, group: t.group + name + "."}
}

// severityOf maps slog levels to Tor's: Debug DEBUG, Info NOTICE (what
// an operator should see), Warn WARN, Error ERR; levels between Debug and
// Info are INFO.
func severityOf(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "ERR"
	case l >= slog.LevelWarn:
		return "WARN"
	case l >= slog.LevelInfo:
		return "NOTICE"
	case l > slog.LevelDebug:
		return "INFO"
	}
	return "DEBUG"
}

// levelOf is the lowest slog level reported as the Tor severity s.
func levelOf(s string) slog.Level {
	switch s {
	case "ERR":
		return slog.LevelError
	case "WARN":
		return slog.LevelWarn
	case "NOTICE":
		return slog.LevelInfo
	case "INFO":
		return slog.LevelDebug + 1
	}
	return slog.LevelDebug
}
