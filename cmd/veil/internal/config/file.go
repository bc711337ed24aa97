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
