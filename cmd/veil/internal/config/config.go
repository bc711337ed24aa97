// Package config is veil's one configuration file: its keys and their
// defaults, how the file, VEIL_* environment variables and flags override
// one another (in that order, the last winning), and the checks that name
// the key, the bad value and what is allowed.
package config

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"veil/circuits/exitpolicy"
	"veil/proto"
)

// Default ports and addresses. They are constants so that every part of
// veil (and its documentation) agrees on them.
const (
	DefaultLinkPort    = 7700
	DefaultSOCKSAddr   = "127.0.0.1:7750"
	DefaultControlAddr = "127.0.0.1:7751"
	DefaultHTTPAddr    = "127.0.0.1:7780"
	DefaultListenAddr  = "0.0.0.0:7700"
)

// FileName is the configuration file's name under $XDG_CONFIG_HOME/veil.
const FileName = "veil.toml"

// Config is the whole configuration. Its toml tags are the keys of the
// file; the environment variable of key a.b is VEIL_A_B.
type Config struct {
	Roles  Roles  `toml:"roles"`
	Listen string `toml:"listen"`
	// Advertise is the address other nodes reach this one at, when it
	// differs from Listen (NAT, or Listen on 0.0.0.0).
	Advertise string   `toml:"advertise"`
	DataDir   string   `toml:"data_dir"`
	Bridges   []string `toml:"bridges"`
	HTTP      string   `toml:"http"`
	// SOCKS is the SOCKS4a/5 listener for applications (loopback only).
	SOCKS string `toml:"socks"`
	// LogLevel is error, warn, info or debug.
	LogLevel string `toml:"log_level"`
	// AllowPrivate lets links, the DHT and paths use loopback and private
	// addresses and lifts the per-subnet limits: for test networks only.
	AllowPrivate bool `toml:"allow_private"`
	// RelayBandwidthRate and RelayBandwidthBurst limit the bytes all the
	// node's links write together, per second and at once (sizes; "0"
	// rate: no limit), as Tor's RelayBandwidthRate and Burst do.
	RelayBandwidthRate  string `toml:"relay_bandwidth_rate"`
	RelayBandwidthBurst string `toml:"relay_bandwidth_burst"`
	// Anonymous makes the node refuse every setting that would reveal its
	// user, and dial nothing but its circuits' first hops and its bridges
	// (anonymous.go).
	Anonymous bool `toml:"anonymous"`
	// Pseudonym names the publishing key `veil put` signs with, kept in
	// the data directory; "" signs each content with a key of its own.
	Pseudonym string  `toml:"pseudonym"`
	Tunnels   Tunnels `toml:"tunnels"`
	Limits    Limits  `toml:"limits"`
	// Control is the control port that Tor's controllers (stem, nyx) use.
	Control Control `toml:"control"`
	// Facilitator is the BitTorrent side of roles.facilitator and the
	// facilitators this node's ORDB asks.
	Facilitator Facilitator `toml:"facilitator"`
	Exit        Exit        `toml:"exit"`
}

// Control is the control port: Tor's control protocol on loopback.
type Control struct {
	// Listen is a loopback IP:PORT, or "" for no control port.
	Listen string `toml:"listen"`
	// HashedPassword, if set, is a password controllers may authenticate
	// with, in Tor's HashedControlPassword form ("16:" and 58 hex digits,
	// as `tor --hash-password` prints it).
	HashedPassword string `toml:"hashed_password"`
	// NullAuth lets any local process control the node without a secret.
	NullAuth bool `toml:"null_auth"`
}

// Limits bound what other nodes can make this one spend (memory, links,
// handshakes); docs/ARCHITECTURE.md, "Budgets and limits", explains each.
type Limits struct {
	// MaxQueued is the node-wide budget of cells queued in circuits, a
	// size ("32MiB").
	MaxQueued string `toml:"max_queued"`
	// MaxLinks bounds the node's links, both directions.
	MaxLinks int `toml:"max_links"`
	// MaxInboundPerSubnet bounds inbound links from one /24 (IPv4) or
	// /48 (IPv6); allow_private lifts it.
	MaxInboundPerSubnet int `toml:"max_inbound_per_subnet"`
	// MaxHandshakes bounds inbound TLS handshakes in progress.
	MaxHandshakes int `toml:"max_handshakes"`
	// CreateRate bounds the circuits one link may ask for, per second.
	CreateRate int `toml:"create_rate"`
}

// Exit is what the node lets SOCKS users of others reach when roles.exit
// is on.
type Exit struct {
	// Policy is Tor's exit policy lines, first match deciding
	// (circuits/exitpolicy).
	Policy []string `toml:"policy"`
	// AllowPrivate lets the policy accept private, loopback, link-local,
	// CGNAT, multicast and reserved destinations, refused otherwise.
	AllowPrivate bool `toml:"allow_private"`
}

// ExitPolicy is the parsed exit policy; Validate has checked it.
func (c Config) ExitPolicy() (exitpolicy.Policy, error) {
	p, err := exitpolicy.Parse(c.Exit.Policy, c.Exit.AllowPrivate)
	if err != nil {
		return p, &Error{"exit.policy", strings.Join(c.Exit.Policy, ", "), fmt.Sprintf("%v; want lines like \"accept *:443\" or \"reject 10.0.0.0/8:*\"", err)}
	}
	return p, nil
}

// Roles are what the node offers others: the TunnelCommunity's peer_flags.
type Roles struct {
	Relay       bool `toml:"relay"`
	ORDB        bool `toml:"ordb"`
	Facilitator bool `toml:"facilitator"`
	Bridge      bool `toml:"bridge"`
	Exit        bool `toml:"exit"`
}

// Tunnels are the TunnelCommunity settings of the node's own circuits and
// of those it carries for others.
type Tunnels struct {
	Hops              int    `toml:"hops"`
	MinCircuits       int    `toml:"min_circuits"`
	MaxCircuits       int    `toml:"max_circuits"`
	MaxJoinedCircuits int    `toml:"max_joined_circuits"`
	MaxTime           string `toml:"max_time"`
	MaxTimeInactive   string `toml:"max_time_inactive"`
	MaxTraffic        string `toml:"max_traffic"`
}

// Default returns the configuration veil runs with when nothing is set.
// DataDir stays empty: DataDirOrDefault resolves it.
func Default() Config {
	return Config{
		Roles:    Roles{Relay: true, ORDB: true},
		Listen:   DefaultListenAddr,
		Bridges:  []string{},
		HTTP:     DefaultHTTPAddr,
		SOCKS:    DefaultSOCKSAddr,
		LogLevel: "warn",
		// What a home uplink can spare is the operator's to say.
		RelayBandwidthRate:  "0",
		RelayBandwidthBurst: "1MiB",
		Tunnels: Tunnels{
			Hops:              3,
			MinCircuits:       4,
			MaxCircuits:       8,
			MaxJoinedCircuits: 1000,
			MaxTime:           "10m",
			MaxTimeInactive:   "2m",
			MaxTraffic:        "250MiB",
		},
		Limits: Limits{
			MaxQueued:           "32MiB",
			MaxLinks:            1024,
			MaxInboundPerSubnet: 16,
			MaxHandshakes:       64,
			CreateRate:          20,
		},
		Control:     Control{Listen: DefaultControlAddr},
		Facilitator: defaultFacilitator(),
		Exit:        Exit{Policy: []string{"accept *:80", "accept *:443", "reject *:*"}},
	}
}

// Error is a bad setting: the key, the value given and what is allowed.
type Error struct {
	Key, Value, Allowed string
}

func (e *Error) Error() string {
	return fmt.Sprintf("config: %s = %q: %s", e.Key, e.Value, e.Allowed)
}

// ErrUnknownKey is wrapped by the error of a key veil does not know.
var ErrUnknownKey = errors.New("unknown key")

// Path returns the configuration file's path: $XDG_CONFIG_HOME/veil/veil.toml,
// or ~/.config/veil/veil.toml.
func Path() string {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		if home, err := os.UserHomeDir(); err == nil {
			dir = filepath.Join(home, ".config")
		}
	}
	return filepath.Join(dir, "veil", FileName)
}

// DefaultDataDir returns $XDG_DATA_HOME/veil, or ~/.local/share/veil.
func DefaultDataDir() string {
	dir := os.Getenv("XDG_DATA_HOME")
	if dir == "" {
		if home, err := os.UserHomeDir(); err == nil {
			dir = filepath.Join(home, ".local", "share")
		}
	}
	return filepath.Join(dir, "veil")
}

// DataDirOrDefault is DataDir, or DefaultDataDir when it is empty.
func (c Config) DataDirOrDefault() string {
	if c.DataDir != "" {
		return c.DataDir
	}
	return DefaultDataDir()
}

// Parse decodes a configuration file over the defaults and checks it. A
// key veil does not know is an error, not silence.
func Parse(b []byte) (Config, error) {
	c, err := decode(b)
	if err != nil {
		return c, err
	}
	return c, c.Validate()
}

// decode is Parse without the value checks: the environment and flags may
// still change the values.
func decode(b []byte) (Config, error) {
	c := Default()
	md, err := toml.NewDecoder(bytes.NewReader(b)).Decode(&c)
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return c, fmt.Errorf("config: %w: %s (run `veil config default` for the known keys)", ErrUnknownKey, strings.Join(keys, ", "))
	}
	return c, nil
}

// Load reads the file at path over the defaults. A missing file is not an
// error when missingOK: every key has a default.
func Load(path string, missingOK bool) (Config, error) {
	c, err := load(path, missingOK)
	if err == nil {
		err = c.Validate()
	}
	if err != nil && !strings.HasPrefix(err.Error(), path) {
		err = fmt.Errorf("%s: %w", path, err)
	}
	return c, err
}

func load(path string, missingOK bool) (Config, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && missingOK {
		return Default(), nil
	}
	if err != nil {
		return Default(), fmt.Errorf("config: %w", err)
	}
	c, err := decode(b)
	if err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Keys returns every key of the file, dotted (tunnels.max_time), in file order.
func Keys() []string {
	var keys []string
	walk(reflect.ValueOf(&Config{}).Elem(), "", func(key string, _ reflect.Value) { keys = append(keys, key) })
	return keys
}

// EnvName is the environment variable that overrides key.
func EnvName(key string) string {
	return "VEIL_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

func walk(v reflect.Value, prefix string, f func(key string, field reflect.Value)) {
	t := v.Type()
	for i := range t.NumField() {
		key := prefix + t.Field(i).Tag.Get("toml")
		if t.Field(i).Type.Kind() == reflect.Struct {
			walk(v.Field(i), key+".", f)
			continue
		}
		f(key, v.Field(i))
	}
}

// Set sets key from its text form, as an environment variable or a flag
// gives it: booleans as true/false, lists comma-separated.
func (c *Config) Set(key, value string) error {
	var field reflect.Value
	walk(reflect.ValueOf(c).Elem(), "", func(k string, f reflect.Value) {
		if k == key {
			field = f
		}
	})
	if !field.IsValid() {
		return fmt.Errorf("config: %w: %s", ErrUnknownKey, key)
	}
	switch field.Kind() {
	case reflect.String:
		field.SetString(value)
	case reflect.Bool:
		b, err := strconv.ParseBool(value)
		if err != nil {
			return &Error{Key: key, Value: value, Allowed: "want true or false"}
		}
		field.SetBool(b)
	case reflect.Int:
		n, err := strconv.Atoi(value)
		if err != nil {
			return &Error{Key: key, Value: value, Allowed: "want an integer"}
		}
		field.SetInt(int64(n))
	case reflect.Slice:
		var list []string
		for _, s := range strings.Split(value, ",") {
			if s = strings.TrimSpace(s); s != "" {
				list = append(list, s)
			}
		}
		field.Set(reflect.ValueOf(list))
	default:
		panic("config: unhandled kind " + field.Kind().String()) // a key of a new type
	}
	return nil
}

// ApplyEnv applies the VEIL_* variables that getenv knows (os.Getenv in
// production).
func (c *Config) ApplyEnv(getenv func(string) string) error {
	for _, k := range Keys() {
		if v := getenv(EnvName(k)); v != "" {
			if err := c.Set(k, v); err != nil {
				return fmt.Errorf("%s: %w", EnvName(k), err)
			}
		}
	}
	return nil
}

// Validate reports the first bad setting, naming the key, the value and
// what is allowed.
func (c Config) Validate() error {
	if c.Listen != "" {
		if _, err := netip.ParseAddrPort(c.Listen); err != nil {
			return &Error{"listen", c.Listen, `want IP:PORT (e.g. "0.0.0.0:7700"), or "" to accept no links (client only)`}
		}
	}
	if c.Advertise != "" {
		ap, err := netip.ParseAddrPort(c.Advertise)
		if err != nil || ap.Addr().IsUnspecified() || ap.Port() == 0 {
			return &Error{"advertise", c.Advertise, `want the IP:PORT others reach this node at (a specific IP and port), or "" for the listen address`}
		}
	}
	if c.HTTP != "" {
		ap, err := netip.ParseAddrPort(c.HTTP)
		if err != nil || !ap.Addr().IsLoopback() {
			return &Error{"http", c.HTTP, `want a loopback IP:PORT (e.g. "127.0.0.1:7780"), or "" for no local API`}
		}
	}
	if err := c.Control.validate(); err != nil {
		return err
	}
	if c.SOCKS != "" {
		ap, err := netip.ParseAddrPort(c.SOCKS)
		if err != nil || !ap.Addr().IsLoopback() {
			return &Error{"socks", c.SOCKS, `want a loopback IP:PORT (e.g. "127.0.0.1:7750"), or "" for no SOCKS port`}
		}
	}
	if _, err := c.ExitPolicy(); err != nil {
		return err
	}
	for _, b := range c.Bridges {
		if _, err := ParseBridge(b); err != nil {
			return &Error{"bridges", b, "want ID@IP:PORT with ID the bridge's 40-hex-digit node ID (`veil status` on the bridge prints it)"}
		}
	}
	if !slices.Contains([]string{"error", "warn", "info", "debug"}, c.LogLevel) {
		return &Error{"log_level", c.LogLevel, "want error, warn, info or debug"}
	}
	t := c.Tunnels
	switch {
	case t.Hops < 1 || t.Hops > 8:
		return &Error{"tunnels.hops", strconv.Itoa(t.Hops), "want 1..8"}
	case t.MinCircuits < 1 || t.MinCircuits > 64:
		return &Error{"tunnels.min_circuits", strconv.Itoa(t.MinCircuits), "want 1..64"}
	case t.MaxCircuits < t.MinCircuits || t.MaxCircuits > 64:
		return &Error{"tunnels.max_circuits", strconv.Itoa(t.MaxCircuits), fmt.Sprintf("want min_circuits (%d)..64", t.MinCircuits)}
	case t.MaxJoinedCircuits < 0:
		return &Error{"tunnels.max_joined_circuits", strconv.Itoa(t.MaxJoinedCircuits), "want 0 or more"}
	}
	if _, _, err := c.BandwidthLimit(); err != nil {
		return err
	}
	if _, err := c.MaxTime(); err != nil {
		return err
	}
	if _, err := c.MaxTimeInactive(); err != nil {
		return err
	}
	if _, err := c.MaxTraffic(); err != nil {
		return err
	}
	l := c.Limits
	switch {
	case l.MaxLinks < 16:
		return &Error{"limits.max_links", strconv.Itoa(l.MaxLinks), "want 16 or more"}
	case l.MaxInboundPerSubnet < 0:
		return &Error{"limits.max_inbound_per_subnet", strconv.Itoa(l.MaxInboundPerSubnet), "want 0 (no limit) or more"}
	case l.MaxHandshakes < 1:
		return &Error{"limits.max_handshakes", strconv.Itoa(l.MaxHandshakes), "want 1 or more"}
	case l.CreateRate < 1:
		return &Error{"limits.create_rate", strconv.Itoa(l.CreateRate), "want 1 or more (circuits a second per link)"}
	}
	if _, err := c.MaxQueued(); err != nil {
		return err
	}
	if err := checkPseudonym(c.Pseudonym); err != nil {
		return err
	}
	if err := c.checkAnonymous(); err != nil {
		return err
	}
	return c.Facilitator.validate()
}

// MaxQueued is limits.max_queued in bytes.
func (c Config) MaxQueued() (int, error) {
	n, err := ParseSize(c.Limits.MaxQueued)
	if err != nil || n < 1<<20 || n > 1<<40 {
		return 0, &Error{"limits.max_queued", c.Limits.MaxQueued, `want a size of at least 1MiB, like "32MiB"`}
	}
	return int(n), nil
}

func duration(key, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Second {
		return 0, &Error{key, s, `want a duration of at least 1s, like "90s", "10m" or "1h"`}
	}
	return d, nil
}

// MaxTime is tunnels.max_time.
func (c Config) MaxTime() (time.Duration, error) {
	return duration("tunnels.max_time", c.Tunnels.MaxTime)
}

// MaxTimeInactive is tunnels.max_time_inactive.
func (c Config) MaxTimeInactive() (time.Duration, error) {
	return duration("tunnels.max_time_inactive", c.Tunnels.MaxTimeInactive)
}

// BandwidthLimit is relay_bandwidth_rate and relay_bandwidth_burst in
// bytes; rate 0 means no limit.
func (c Config) BandwidthLimit() (rate, burst uint64, err error) {
	if rate, err = ParseSize(c.RelayBandwidthRate); err != nil || (rate != 0 && rate < 64<<10) || rate > 1<<30 {
		return 0, 0, &Error{"relay_bandwidth_rate", c.RelayBandwidthRate, `want bytes per second from 64KiB to 1GiB, like "8MB" or "2MiB", or "0" for no limit`}
	}
	if burst, err = ParseSize(c.RelayBandwidthBurst); err != nil || burst < 64<<10 || burst > 1<<30 {
		return 0, 0, &Error{"relay_bandwidth_burst", c.RelayBandwidthBurst, `want a size from 64KiB to 1GiB, like "1MiB"`}
	}
	return rate, burst, nil
}

// MaxTraffic is tunnels.max_traffic in bytes.
func (c Config) MaxTraffic() (uint64, error) {
	n, err := ParseSize(c.Tunnels.MaxTraffic)
	if err != nil || n < 1<<20 {
		return 0, &Error{"tunnels.max_traffic", c.Tunnels.MaxTraffic, `want a size of at least 1MiB, like "250MiB" or "1GiB"`}
	}
	return n, nil
}

// ParseSize reads a byte count: digits, optionally followed by KiB, MiB,
// GiB (or kB, MB, GB).
func ParseSize(s string) (uint64, error) {
	units := []struct {
		suffix string
		mul    uint64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"kB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	mul := uint64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mul = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mul
			break
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > (1<<62)/mul {
		return 0, fmt.Errorf("config: bad size %q", s)
	}
	return n * mul, nil
}

// Flags returns the proto node flags of the roles.
func (r Roles) Flags() uint8 {
	var f uint8
	for _, x := range []struct {
		on   bool
		flag uint8
	}{{r.Relay, proto.FlagRelay}, {r.ORDB, proto.FlagORDB}, {r.Facilitator, proto.FlagFacilitator}, {r.Bridge, proto.FlagBridge}, {r.Exit, proto.FlagExit}} {
		if x.on {
			f |= x.flag
		}
	}
	return f
}

// ClientOnly reports whether the node offers nothing to others: it then
// shows a fresh link identity each session and accepts no links.
func (c Config) ClientOnly() bool {
	return !c.Roles.Relay && !c.Roles.ORDB && !c.Roles.Facilitator && !c.Roles.Bridge && !c.Roles.Exit
}

// Bridge is a bootstrap node: its ID (the link authenticates it) and address.
type Bridge struct {
	ID   proto.NodeID
	Addr netip.AddrPort
}

// String is the bridge's ID@IP:PORT form.
func (b Bridge) String() string { return fmt.Sprintf("%v@%v", b.ID, b.Addr) }

// ParseBridge reads ID@IP:PORT.
func ParseBridge(s string) (Bridge, error) {
	idHex, addr, ok := strings.Cut(s, "@")
	if !ok {
		return Bridge{}, fmt.Errorf("config: bridge %q: want ID@IP:PORT", s)
	}
	id, err := proto.ParseNodeID(idHex)
	if err != nil {
		return Bridge{}, fmt.Errorf("config: bridge %q: %w", s, err)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return Bridge{}, fmt.Errorf("config: bridge %q: %w", s, err)
	}
	return Bridge{ID: id, Addr: ap}, nil
}

// ParsedBridges returns the bridges; Validate has checked them.
func (c Config) ParsedBridges() []Bridge {
	var out []Bridge
	for _, s := range c.Bridges {
		if b, err := ParseBridge(s); err == nil {
			out = append(out, b)
		}
	}
	return out
}

// Override is one setting given on the command line.
type Override struct{ Key, Value string }

// Resolve builds the configuration a command runs with: the defaults, the
// file at path (which may be missing unless explicit), the VEIL_* variables
// getenv knows, then the command-line overrides, each winning over the
// ones before; then it checks the result.
func Resolve(path string, explicit bool, getenv func(string) string, overrides []Override) (Config, error) {
	c, err := load(path, !explicit)
	if err != nil {
		return c, err
	}
	if err := c.ApplyEnv(getenv); err != nil {
		return c, err
	}
	for _, o := range overrides {
		if err := c.Set(o.Key, o.Value); err != nil {
			return c, fmt.Errorf("flag for %s: %w", o.Key, err)
		}
	}
	return c, c.Validate()
}

func (c Control) validate() error {
	if c.Listen != "" {
		ap, err := netip.ParseAddrPort(c.Listen)
		if err != nil || !ap.Addr().IsLoopback() {
			return &Error{"control.listen", c.Listen, `want a loopback IP:PORT (e.g. "127.0.0.1:7751"), or "" for no control port`}
		}
	}
	if h := c.HashedPassword; h != "" {
		hexPart, ok := strings.CutPrefix(h, "16:")
		_, err := hex.DecodeString(hexPart)
		if !ok || len(hexPart) != 58 || err != nil {
			return &Error{"control.hashed_password", h, `want Tor's hashed form "16:" and 58 hex digits (from tor --hash-password), or ""`}
		}
	}
	return nil
}
