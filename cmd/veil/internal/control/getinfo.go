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
	"fingerprint", "status/version/current", "accounting/enabled", "ns/all", "ns/id/*", "ns/name/*", "veil/status",
}

var listenerKinds = []string{"or", "dir", "socks", "trans", "natd", "dns", "control", "extor", "httptunnel", "metrics"}

// info answers one GETINFO key: its value, ok false for an unknown key,
// or infoError for a known key without a value.
func (c *conn) info(key string) (value string, ok bool, err error) {
	s := c.s
	b := s.cfg.Backend
	switch key {
	case "version":
		return TorVersion, true, nil
	case "process/pid":
		return strconv.Itoa(os.Getpid()), true, nil
	case "process/user":
		if u, err := user.Current(); err == nil {
			return u.Username, true, nil
		}
		return "", true, nil
	case "process/descriptor-limit":
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return "", true, infoError("descriptor limit unknown")
		}
		return strconv.FormatUint(rl.Cur, 10), true, nil
	case "uptime":
		return strconv.FormatInt(int64(s.cfg.Now().Sub(s.started)/time.Second), 10), true, nil
	case "traffic/read", "traffic/written":
		r, w := b.Traffic()
		if key == "traffic/read" {
			return strconv.FormatUint(r, 10), true, nil
		}
		return strconv.FormatUint(w, 10), true, nil
	case "bw-event-cache":
		return s.bwEventCache(), true, nil
	case "circuit-status":
		return multi(s.circuitStatus()), true, nil
	case "stream-status":
		return multi(s.streamStatus()), true, nil
	case "orconn-status":
		return multi(s.orconnStatus()), true, nil
	case "events/names":
		return strings.Join(EventNames, " "), true, nil
	case "signal/names":
		return "RELOAD SHUTDOWN DUMP DEBUG HALT HUP INT USR1 USR2 TERM NEWNYM CLEARDNSCACHE HEARTBEAT ACTIVE DORMANT", true, nil
	case "features/names":
		return "VERBOSE_NAMES EXTENDED_EVENTS", true, nil
	case "info/names":
		var lines []string
		for _, k := range infoKeys {
			lines = append(lines, k+" -- veil answers it")
		}
		return multi(strings.Join(lines, "\n")), true, nil
	case "config-file":
		return b.ConfigFile(), true, nil
	case "config-text":
		var sb strings.Builder
		if err := toml.NewEncoder(&sb).Encode(b.Config()); err != nil {
			return "", true, infoError(err.Error())
		}
		return multi(sb.String()), true, nil
	case "config/names":
		return multi(configNames()), true, nil
	case "config/defaults":
		return multi(configDefaults()), true, nil
	case "address":
		if a := b.Addr(); a.IsValid() {
			return a.Addr().String(), true, nil
		}
		return "", true, infoError("Address unknown")
	case "fingerprint":
		if b.Config().ClientOnly() {
			return "", true, infoError("Not running in server mode")
		}
		return Fingerprint(b.ID()), true, nil
	case "status/version/current":
		return "unknown", true, nil // there is no consensus to recommend versions
	case "accounting/enabled":
		return "0", true, nil
	case "veil/status":
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		j, err := b.Status(ctx)
		if err != nil {
			return "", true, infoError(err.Error())
		}
		return string(j), true, nil
	}
	if strings.HasPrefix(key, "ns/") {
		return s.networkStatus(key)
	}
	if kind, ok := strings.CutPrefix(key, "net/listeners/"); ok {
		for _, k := range listenerKinds {
			if k == kind {
				return s.listeners(kind), true, nil
			}
		}
	}
	return "", false, nil
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
	case "socks":
		if a := s.cfg.Backend.SOCKSAddr(); a != "" {
			addrs = []string{a}
		}
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
		v, ok, err := c.info(a.Key)
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
