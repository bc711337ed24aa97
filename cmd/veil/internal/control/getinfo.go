package control

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
)

// infoError is a GETINFO key that is known but has no value here (551).
type infoError string

// infoKeys are the GETINFO keys the port answers, in the order
// info/names lists them.
var infoKeys = []string{
	"version", "process/pid", "process/user", "process/descriptor-limit", "uptime",
	"traffic/read", "traffic/written", "bw-event-cache", "circuit-status", "stream-status",
	"orconn-status", "events/names", "signal/names", "features/names", "info/names",
	"config-file", "config-text", "config/names", "config/defaults", "net/listeners/*", "address",
	"fingerprint", "status/version/current", "accounting/enabled", "veil/status",
}

var listenerKinds = []string{"or", "dir", "socks", "trans", "natd", "dns", "control", "extor", "httptunnel", "metrics"}

// info answers one GETINFO key: its value, infoError for a known key
// without a value, or ok false for an unknown key.
func (c *conn) info(key string) (value string, err error, ok bool) {
	s := c.s
	b := s.cfg.Backend
	switch key {
	case "version":
		return TorVersion, nil, true
	case "process/pid":
		return strconv.Itoa(os.Getpid()), nil, true
	case "process/user":
		if u, err := user.Current(); err == nil {
			return u.Username, nil, true
		}
		return "", nil, true
	case "process/descriptor-limit":
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return "", infoError("descriptor limit unknown"), true
		}
		return strconv.FormatUint(rl.Cur, 10), nil, true
	case "uptime":
		return strconv.FormatInt(int64(s.cfg.Now().Sub(s.started)/time.Second), 10), nil, true
	case "traffic/read", "traffic/written":
		r, w := b.Traffic()
		if key == "traffic/read" {
			return strconv.FormatUint(r, 10), nil, true
		}
		return strconv.FormatUint(w, 10), nil, true
	case "bw-event-cache":
		return s.bwEventCache(), nil, true
	case "circuit-status":
		return multi(s.circuitStatus()), nil, true
	case "stream-status":
		return multi(s.streamStatus()), nil, true
	case "orconn-status":
		return multi(s.orconnStatus()), nil, true
	case "events/names":
		return strings.Join(EventNames, " "), nil, true
	case "signal/names":
		return "RELOAD SHUTDOWN DUMP DEBUG HALT HUP INT USR1 USR2 TERM NEWNYM CLEARDNSCACHE HEARTBEAT ACTIVE DORMANT", nil, true
	case "features/names":
		return "VERBOSE_NAMES EXTENDED_EVENTS", nil, true
	case "info/names":
		var lines []string
		for _, k := range infoKeys {
			lines = append(lines, k+" -- veil answers it")
		}
		return multi(strings.Join(lines, "\n")), nil, true
	case "config-file":
		return b.ConfigFile(), nil, true
	case "config-text":
		var sb strings.Builder
		if err := toml.NewEncoder(&sb).Encode(b.Config()); err != nil {
			return "", infoError(err.Error()), true
		}
		return multi(sb.String()), nil, true
	case "config/names":
		return multi(configNames()), nil, true
	case "config/defaults":
		return multi(configDefaults()), nil, true
	case "address":
		if a := b.Addr(); a.IsValid() {
			return a.Addr().String(), nil, true
		}
		return "", infoError("Address unknown"), true
	case "fingerprint":
		if b.Config().ClientOnly() {
			return "", infoError("Not running in server mode"), true
		}
		return Fingerprint(b.ID()), nil, true
	case "status/version/current":
		return "unknown", nil, true // there is no consensus to recommend versions
	case "accounting/enabled":
		return "0", nil, true
	case "veil/status":
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		j, err := b.Status(ctx)
		if err != nil {
			return "", infoError(err.Error()), true
		}
		return string(j), nil, true
	}
	if kind, ok := strings.CutPrefix(key, "net/listeners/"); ok {
		for _, k := range listenerKinds {
			if k == kind {
				return s.listeners(kind), nil, true
			}
		}
	}
	return "", nil, false
}

func (e infoError) Error() string { return string(e) }

// multi marks a list value so it goes out as a data block even when it
// has one line (stem splits such values into lines).
func multi(v string) string {
	if v == "" {
		return ""
	}
	return v + "\n"
}

func (s *Server) listeners(kind string) string {
	var addrs []string
	switch kind {
	case "control":
		addrs = []string{s.Addr()}
	case "or":
		if a := s.cfg.Backend.Addr(); a.IsValid() {
			addrs = []string{a.String()}
		}
	}
	for i, a := range addrs {
		addrs[i] = Quote(a)
	}
	return strings.Join(addrs, " ")
}

func (c *conn) getInfo(args string) reply {
	as, err := ParseArgs(args)
	if err != nil {
		return errReply(codeBadArgs, err.Error())
	}
	if len(as) == 0 {
		return errReply(codeBadArgs, "GETINFO takes one or more keys")
	}
	var r reply
	for _, a := range as {
		if a.HasValue {
			return errReply(codeBadArgs, fmt.Sprintf("GETINFO key %q is not a word", trunc(a.Key+"="+a.Value)))
		}
		v, err, ok := c.info(a.Key)
		if !ok {
			return errReply(codeUnknownArg, fmt.Sprintf("Unrecognized key %q", trunc(a.Key)))
		}
		if err != nil {
			return errReply(codeNotAvailable, err.Error())
		}
		r.addValue(codeOK, a.Key, v)
	}
	r.add(codeOK, "OK")
	return r
}
