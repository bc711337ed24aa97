package config

import (
	"regexp"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// MinAnonymousHops is the shortest circuit an anonymous node builds: with
// three hops the first knows the user's address but not what is asked,
// the last what is asked but not who, and the middle neither, so no single
// hop (nor the two ends' neighbours) holds both.
const MinAnonymousHops = 3

// checkAnonymous refuses, when anonymous is on, every setting that would
// tell someone who the user is, naming the first such key:
//
//   - roles.exit: an exit opens connections to the internet from the
//     user's address for others, and its descriptor says where it is;
//   - roles.facilitator: a facilitator fetching for its own user would
//     join BitTorrent swarms from the user's address with the infohash;
//   - roles.relay, roles.ordb, roles.bridge: any role makes the node keep
//     one link identity across sessions (its ID is its place in the DHT)
//     and publish a descriptor with its address. Its first hops then see
//     the same ID whatever address it comes from, the directory tells
//     everyone where it is, and its role makes it dial and be dialled by
//     many nodes. That is what makes a relay's links distinguishable from
//     a client's: a client shows a fresh identity each session and links
//     only to its first hops and bridges. So an anonymous node is a
//     client only;
//   - listen: accepting links announces a server at this address;
//   - tunnels.hops below MinAnonymousHops: a one- or two-hop circuit lets
//     one node (or two neighbours) see both the user's address and the
//     hash_name asked.
//
// Publishing under the node's identity key is refused in every mode
// (node.Publish), so it needs no key here.
func (c Config) checkAnonymous() error {
	if !c.Anonymous {
		return nil
	}
	const why = "anonymous = true: "
	roles := []struct {
		key  string
		on   bool
		text string
	}{
		{"roles.exit", c.Roles.Exit, "an exit opens connections to the internet from your address; set it false"},
		{"roles.facilitator", c.Roles.Facilitator, "a facilitator joins BitTorrent swarms from your address with the infohash it fetches; set it false"},
		{"roles.relay", c.Roles.Relay, "a relay keeps one link identity across sessions and publishes its address, which tells its links apart from a client's; set it false (an anonymous node is a client only)"},
		{"roles.ordb", c.Roles.ORDB, "an ORDB keeps one identity and address in the DHT and dials other ORDBs and DHT nodes; set it false (an anonymous node is a client only)"},
		{"roles.bridge", c.Roles.Bridge, "a bridge is a well-known address; set it false (an anonymous node is a client only)"},
	}
	for _, r := range roles {
		if r.on {
			return &Error{Key: r.key, Value: "true", Allowed: why + r.text}
		}
	}
	if c.Listen != "" {
		return &Error{Key: "listen", Value: c.Listen, Allowed: why + `want "": accepting links announces a server at this address`}
	}
	if c.Tunnels.Hops < MinAnonymousHops {
		return &Error{Key: "tunnels.hops", Value: strconv.Itoa(c.Tunnels.Hops), Allowed: why + "want at least 3: with fewer, one node sees both your address and what you ask"}
	}
	return nil
}

var pseudonymRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func checkPseudonym(name string) error {
	if name != "" && !pseudonymRE.MatchString(name) {
		return &Error{Key: "pseudonym", Value: name, Allowed: `want 1..64 letters, digits, "-" or "_", or "" for a new key per content`}
	}
	return nil
}

// ValidPseudonym reports whether name may name a publishing key.
func ValidPseudonym(name string) bool { return checkPseudonym(name) == nil && name != "" }

// Defined reports whether the file at path sets key (dotted) itself,
// rather than leaving it at its default. A missing or unreadable file
// sets nothing.
func Defined(path, key string) bool {
	var v map[string]any
	md, err := toml.DecodeFile(path, &v)
	return err == nil && md.IsDefined(strings.Split(key, ".")...)
}
