package config

// DefaultFile is the configuration file with every key at its default and
// a comment saying what it does. `veil config default` prints it; Parse
// accepts it and gives Default().
const DefaultFile = `# veil configuration: $XDG_CONFIG_HOME/veil/veil.toml
# Every key is optional; this file shows each at its default.
# The environment variable VEIL_<KEY> (dots as underscores, upper case, e.g.
# VEIL_TUNNELS_MIN_CIRCUITS) overrides the file; command-line flags override both.

# Where the node accepts links from other nodes (TCP + TLS), IP:PORT.
# "" accepts none: the node is then only a client of others.
listen = "0.0.0.0:7700"

# The IP:PORT other nodes reach this node at, when it differs from listen
# (behind NAT, or listen on 0.0.0.0). "" means the listen address when it
# names one IP.
advertise = ""

# Where the node keeps its identity, its stores and the API cookie.
# "" means $XDG_DATA_HOME/veil (~/.local/share/veil). Flag: --data-dir.
data_dir = ""

# Bootstrap nodes, each "ID@IP:PORT" (ID: the bridge's 40-hex-digit node ID,
# which the link authenticates). Flag: --bridge (repeatable).
bridges = []

# The local HTTP API (JSON under /api/v1/), loopback only. "" turns it off.
http = "127.0.0.1:7780"

# The SOCKS4a/5 port for applications, loopback only. "" turns it off.
# <hash_name>.veil hosts are served by this node over the stream (HTTP);
# other hosts go through a circuit to an exit, which resolves the name: this
# side never does. SOCKS5 username/password are not checked: streams with
# different ones never share a circuit.
socks = "127.0.0.1:7750"

# How much the node logs: error, warn, info or debug. -v on the command line
# means info, -vv debug.
log_level = "warn"

# Let links, the DHT and circuit paths use loopback and private addresses and
# lift the per-subnet limits. Only for test networks on one machine.
allow_private = false

# The most bytes per second all the node's links write together (what it
# relays for others and sends for itself), like Tor's RelayBandwidthRate:
# a size such as "8MB" or "2MiB" (at least 64KiB), or "0" for no limit.
relay_bandwidth_rate = "0"
# How much the links may write at once above that rate (at least 64KiB).
relay_bandwidth_burst = "1MiB"

# Refuse every setting that would reveal who uses this node, and dial
# nothing but the first hops of its own circuits and the bridges. With it
# on, the node must be a client only (every role off, listen = ""), and its
# circuits at least 3 hops long; it then shows a fresh identity each
# session, carries no one else's circuits, learns the directory from its
# bridges and may still publish (through its own circuits). veil get turns
# it on for the client it starts when no node runs.
anonymous = false

# The publishing key veil put signs with: a name (letters, digits, - and _)
# of a key kept in the data directory (pseudonyms/NAME.key, mode 0600), so
# that readers can tell your contents come from one author. "" signs each
# content with a new key, forgotten at once. Never the node's own key.
pseudonym = ""

# What the node offers others (the TunnelCommunity's peer_flags). A node
# with every role off is only a client: it shows a fresh link identity each
# session and accepts no links.
[roles]
# Forward cells of circuits others build through this node.
relay = true
# Be the last hop of others' circuits and serve (or relay) DB_* queries.
ordb = true
# Fetch from BitTorrent for others as a pure freerider.
facilitator = false
# Answer newcomers' DB_FIND_PEER with peers close to them.
bridge = false
# Open TCP streams to the internet for others (legal consequences: off).
exit = false

# The node's own circuits and those it carries for others.
[tunnels]
# Hops of the node's own circuits, the ORDB included (1..8).
hops = 3
# Circuits to keep ready; TunnelsReady is built / min_circuits (1..64).
min_circuits = 4
# Most circuits of our own kept built (min_circuits..64).
max_circuits = 8
# Most circuits of others this node carries (0: none).
max_joined_circuits = 1000
# A circuit older than this is closed and replaced.
max_time = "10m"
# A circuit idle this long is closed and replaced.
max_time_inactive = "2m"
# A circuit that carried this much (both ways) is closed and replaced.
max_traffic = "250MiB"

# What other nodes can make this node spend. The defaults suit a 256 MB
# router; docs/ARCHITECTURE.md ("Budgets and limits") explains each.
[limits]
# Cells queued in circuits, all together. Beyond it the circuits whose
# queues have been stuck longest are destroyed.
max_queued = "32MiB"
# Links to other nodes, both directions (at least 16).
max_links = 1024
# Inbound links from one IPv4 /24 or IPv6 /48 (0: no limit; allow_private
# lifts it).
max_inbound_per_subnet = 16
# Inbound TLS handshakes in progress at once.
max_handshakes = 64
# Circuits one link may ask this node to carry, per second.
create_rate = 20

# The control port: Tor's control protocol, for stem scripts, nyx and
# ` + "`veil status`" + `. Controllers authenticate with the cookie the node writes
# to control.cookie in the data directory (mode 0600).
[control]
# Loopback IP:PORT to listen on; "" turns the control port off.
listen = "127.0.0.1:7751"
# A password controllers may use instead of the cookie, hashed as Tor's
# HashedControlPassword ("16:..." from tor --hash-password); "" for none.
hashed_password = ""
# Let any local process control the node with no secret at all.
null_auth = false

# The BitTorrent side of roles.facilitator, and the facilitators this
# node's ORDB asks for a hash_name nothing else has (a torrent's infohash).
[facilitator]
# BitTorrent peers (IP:PORT) dialled for every torrent. Host names are
# refused: resolving one would tell the resolver what is fetched.
peers = []
# BitTorrent DHT nodes (IP:PORT) to search for peers from, read-only
# (get_peers only, nothing announced). Empty: no DHT.
dht_bootstrap = []
# A PeerGuardian-format blocklist file; "" for none.
blocklist = ""
# How long to wait for a torrent's info dictionary from its peers.
metadata_timeout = "60s"
# The most piece data held per torrent (pieces are dropped once relayed).
capacity = "32MiB"
# Facilitators (ID@IP:PORT) this node's ORDB asks before those it finds in
# the DHT (their F-flagged records).
known = []

# What SOCKS users' streams may reach through this node when roles.exit is on.
[exit]
# Tor's exit policy lines, "accept|reject ADDR[/MASK]:PORT[-PORT]", the first
# that matches deciding; no match refuses. ADDR: *, *4, *6, an IPv4 address,
# [IPv6], or private. Names are resolved here and every address checked.
policy = ["accept *:80", "accept *:443", "reject *:*"]
# Let the policy accept private, loopback, link-local, CGNAT, multicast and
# reserved destinations (IPv4 and IPv6), which are refused otherwise. Only
# for test networks on one machine.
allow_private = false
`
