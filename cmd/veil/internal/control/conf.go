package control

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"veil/cmd/veil/internal/config"
)

// torOption is a Tor configuration option the port answers GETCONF for,
// with the value that describes veil (nil: unset).
type torOption struct {
	name, typ string
	value     func(s *Server, cfg config.Config) []string
}

func fixed(v ...string) func(*Server, config.Config) []string {
	return func(*Server, config.Config) []string { return v }
}

func boolOpt(b bool) []string {
	if b {
		return []string{"1"}
	}
	return []string{"0"}
}

// torOptions are the Tor options stem and nyx ask about. Any other Tor
// option is answered as unset: veil has no such setting.
var torOptions = []torOption{
	{"ControlPort", "LineList", func(s *Server, _ config.Config) []string { return []string{s.Addr()} }},
	{"CookieAuthentication", "Boolean", fixed("1")},
	{"CookieAuthFile", "Filename", func(s *Server, _ config.Config) []string { return []string{s.cookiePath} }},
	{"HashedControlPassword", "LineList", func(_ *Server, c config.Config) []string {
		if c.Control.HashedPassword == "" {
			return nil
		}
		return []string{c.Control.HashedPassword}
	}},
	{"DataDirectory", "Filename", func(_ *Server, c config.Config) []string { return []string{c.DataDirOrDefault()} }},
	{"Nickname", "String", func(s *Server, _ config.Config) []string { return []string{Nickname(s.cfg.Backend.ID())} }},
	{"ORPort", "LineList", func(s *Server, c config.Config) []string {
		if a := s.cfg.Backend.Addr(); a.IsValid() {
			return []string{strconv.Itoa(int(a.Port()))}
		}
		return []string{"0"}
	}},
	{"DirPort", "LineList", fixed("0")},
	{"SocksPort", "LineList", func(s *Server, _ config.Config) []string {
		if a := s.cfg.Backend.SOCKSAddr(); a != "" {
			return []string{a}
		}
		return []string{"0"}
	}},
	{"ClientOnly", "Boolean", func(_ *Server, c config.Config) []string { return boolOpt(c.ClientOnly()) }},
	{"ExitRelay", "Boolean", func(_ *Server, c config.Config) []string { return boolOpt(c.Roles.Exit) }},
	{"BridgeRelay", "Boolean", func(_ *Server, c config.Config) []string { return boolOpt(c.Roles.Bridge) }},
	{"PublishServerDescriptor", "LineList", fixed("0")},
	{"Log", "LineList", func(_ *Server, c config.Config) []string {
		lvl := map[string]string{"error": "err", "warn": "warn", "info": "notice", "debug": "debug"}[c.LogLevel]
		return []string{lvl + " stderr"}
	}},
	{"BandwidthRate", "DataSize", fixed("1073741824")},
	{"BandwidthBurst", "DataSize", fixed("1073741824")},
	{"RelayBandwidthRate", "DataSize", fixed("0")},
	{"RelayBandwidthBurst", "DataSize", fixed("0")},
	{"MaxAdvertisedBandwidth", "DataSize", fixed("1073741824")},
	{"AccountingMax", "DataSize", fixed("0")},
	{"DisableDebuggerAttachment", "Boolean", fixed("0")},
	{"DisableNetwork", "Boolean", fixed("0")},
	{"RunAsDaemon", "Boolean", fixed("0")},
	{"User", "String", nil},
	{"ControlSocket", "LineList", nil},
	{"ExitPolicy", "LineList", nil},
	{"HiddenServiceDir", "LineList", nil},
	{"__OwningControllerProcess", "String", nil},
}

func findTorOption(name string) *torOption {
	for i := range torOptions {
		if strings.EqualFold(torOptions[i].name, name) {
			return &torOptions[i]
		}
	}
	return nil
}

// veilKey finds name among veil's keys, case-insensitively.
func veilKey(name string) string {
	for _, k := range config.Keys() {
		if strings.EqualFold(k, name) {
			return k
		}
	}
	return ""
}

func configNames() string {
	var lines []string
	for _, k := range config.Keys() {
		lines = append(lines, k+" "+config.KeyType(k))
	}
	for _, o := range torOptions {
		lines = append(lines, o.name+" "+o.typ)
	}
	return strings.Join(lines, "\n")
}

func configDefaults() string {
	d := config.Default()
	var lines []string
	for _, k := range config.Keys() {
		vs, _ := d.Get(k)
		for _, v := range vs {
			if v != "" {
				lines = append(lines, k+" "+v)
			}
		}
	}
	return strings.Join(lines, "\n")
}

func (c *conn) getConf(args string) reply {
	as, err := ParseArgs(args)
	if err != nil {
		return errReply(codeBadArgs, err.Error())
	}
	cfg := c.s.cfg.Backend.Config()
	var r reply
	for _, a := range as {
		if a.HasValue || a.Key == "" {
			return errReply(codeBadArgs, "GETCONF takes option names")
		}
		var vals []string
		if k := veilKey(a.Key); k != "" {
			vals, _ = cfg.Get(k)
			if len(vals) == 1 && vals[0] == "" {
				vals = nil
			}
		} else if o := findTorOption(a.Key); o != nil && o.value != nil {
			vals = o.value(c.s, cfg)
		}
		if len(vals) == 0 {
			r.add(codeOK, a.Key)
		}
		for _, v := range vals {
			// Tor writes values raw unless they would read wrong.
			if v == "" || strings.HasPrefix(v, "\"") || strings.ContainsAny(v, "\r\n") {
				v = Quote(v)
			}
			r.add(codeOK, a.Key+"="+v)
		}
	}
	if len(r) == 0 {
		return okReply()
	}
	return r
}

// saveConf is SAVECONF [FORCE]: the configuration in force replaces the
// configuration file, atomically (config.WriteFile): every key at its
// running value, the file's comments gone.
func (c *conn) saveConf(args string) reply {
	as, err := ParseArgs(args)
	if err != nil {
		return errReply(codeBadArgs, err.Error())
	}
	for _, a := range as {
		if a.HasValue || !strings.EqualFold(a.Key, "FORCE") {
			return errReply(codeBadArgs, "SAVECONF takes only FORCE")
		}
	}
	path := c.s.cfg.Backend.ConfigFile()
	if path == "" {
		return errReply(codeNotAvailable, "this node was not started from a configuration file")
	}
	if err := c.s.cfg.Backend.Config().WriteFile(path); err != nil {
		return errReply(codeNotAvailable, "Unable to write configuration to disk: "+err.Error())
	}
	return okReply()
}

// runtimeKeys are the veil keys a running node changes without a restart;
// exit.policy only on an exit (the next BEGIN obeys it).
// relay_bandwidth_rate/burst only between two limits: a node started
// without one (0) takes one at the next start, and goes without one then.
var runtimeKeys = []string{"log_level", "bridges", "exit.policy", "relay_bandwidth_rate", "relay_bandwidth_burst"}

// setConf is SETCONF (reset false) and RESETCONF (reset true): it sets
// veil keys that can change while the node runs, all or none.
func (c *conn) setConf(args string, reset bool) reply {
	as, err := ParseArgs(args)
	if err != nil {
		return errReply(codeBadArgs, err.Error())
	}
	if len(as) == 0 {
		return errReply(codeBadArgs, "no options given")
	}
	b := c.s.cfg.Backend
	cfg := b.Config()
	def := config.Default()
	changed := map[string]bool{}
	var order []string
	for _, a := range as {
		if a.Key == "" {
			return errReply(codeBadArgs, "an option name is missing")
		}
		k := veilKey(a.Key)
		if k == "" && strings.EqualFold(a.Key, "__OwningControllerProcess") {
			if (reset || !a.HasValue) && len(as) == 1 {
				// Unset, as veil always has it (stem resets it once it
				// took ownership through TAKEOWNERSHIP).
				return okReply()
			}
			return errReply(codeBadConfValue, "Transition not allowed: veil does not watch controller processes; use TAKEOWNERSHIP, which stops the node when that connection closes")
		}
		if k == "" {
			return errReply(codeUnknownArg, fmt.Sprintf("Unrecognized option: veil has no option %q", trunc(a.Key)))
		}
		if !slices.Contains(runtimeKeys, k) {
			return errReply(codeBadConfValue, fmt.Sprintf("Transition not allowed: %s takes effect at the next start (edit %s); at run time only %s", k, b.ConfigFile(), strings.Join(runtimeKeys, ", ")))
		}
		if k == "exit.policy" && !cfg.Roles.Exit {
			return errReply(codeBadConfValue, fmt.Sprintf("Transition not allowed: exit.policy applies to an exit and this node is none (roles.exit takes effect at the next start; edit %s)", b.ConfigFile()))
		}
		value := a.Value
		if reset || !a.HasValue {
			dv, _ := def.Get(k)
			value = strings.Join(dv, ",")
		}
		if !changed[k] {
			order = append(order, k)
		} else if old, _ := cfg.Get(k); len(old) > 0 && config.KeyType(k) == "LineList" && !reset && a.HasValue {
			value = strings.Join(old, ",") + "," + value // repeated list keys add up
		}
		changed[k] = true
		if err := cfg.Set(k, value); err != nil {
			return errReply(codeBadConfValue, "Unable to set option: "+err.Error())
		}
	}
	if err := cfg.Validate(); err != nil {
		return errReply(codeBadConfValue, "Unable to set option: "+err.Error())
	}
	if changed["relay_bandwidth_rate"] || changed["relay_bandwidth_burst"] {
		was, _, _ := b.Config().BandwidthLimit()
		now, _, _ := cfg.BandwidthLimit()
		if was == 0 || now == 0 {
			return errReply(codeBadConfValue, fmt.Sprintf("Transition not allowed: turning relay_bandwidth_rate on or off takes effect at the next start (edit %s); at run time it changes between two limits", b.ConfigFile()))
		}
	}
	if err := b.SetConfig(cfg); err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			return errReply(codeBadConfValue, "Unable to set option: "+err.Error())
		}
		return errReply(codeFailed, err.Error())
	}
	var ev reply
	ev.add(codeAsync, "CONF_CHANGED")
	for _, k := range order {
		vs, _ := cfg.Get(k)
		if len(vs) == 0 || len(vs) == 1 && vs[0] == "" {
			ev.add(codeAsync, k)
		}
		for _, v := range vs {
			if v != "" {
				ev.add(codeAsync, k+"="+v)
			}
		}
	}
	ev.add(codeAsync, "OK")
	c.s.emitReply("CONF_CHANGED", ev)
	return okReply()
}
