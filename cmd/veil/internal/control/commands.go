package control

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// EventNames are the events of control-spec §4.1. SETEVENTS accepts all
// of them; veil emits CIRC, STREAM, ORCONN, BW, the log severities,
// SIGNAL and CONF_CHANGED, and never has anything to say for the others
// (there is no consensus, no onion service, no guard).
var EventNames = []string{
	"CIRC", "CIRC_MINOR", "STREAM", "ORCONN", "BW", "DEBUG", "INFO", "NOTICE", "WARN", "ERR",
	"NEWDESC", "ADDRMAP", "AUTHDIR_NEWDESCS", "DESCCHANGED", "STATUS_GENERAL", "STATUS_CLIENT",
	"STATUS_SERVER", "GUARD", "NS", "STREAM_BW", "CLIENTS_SEEN", "NEWCONSENSUS", "BUILDTIMEOUT_SET",
	"SIGNAL", "CONF_CHANGED", "CONN_BW", "CIRC_BW", "CELL_STATS", "TB_EMPTY", "HS_DESC",
	"HS_DESC_CONTENT", "NETWORK_LIVENESS", "TRANSPORT_LAUNCHED", "PT_LOG", "PT_STATUS",
}

// Signals SIGNAL accepts, with their synonyms.
var signalNames = map[string]string{
	"RELOAD": "RELOAD", "HUP": "RELOAD", "SHUTDOWN": "SHUTDOWN", "INT": "SHUTDOWN",
	"DUMP": "DUMP", "USR1": "DUMP", "DEBUG": "DEBUG", "USR2": "DEBUG", "HALT": "HALT", "TERM": "HALT",
	"NEWNYM": "NEWNYM", "CLEARDNSCACHE": "CLEARDNSCACHE", "HEARTBEAT": "HEARTBEAT",
	"ACTIVE": "ACTIVE", "DORMANT": "DORMANT",
}

// handle answers one command; closeAfter ends the connection once the
// reply is out.
func (c *conn) handle(cmd Command) (r reply, closeAfter bool) {
	if cmd.Data {
		return errReply(codeUnknownCmd, fmt.Sprintf("Unrecognized command %q", "+"+cmd.Keyword)), false
	}
	if !c.authed {
		switch cmd.Keyword {
		case "PROTOCOLINFO", "AUTHENTICATE", "AUTHCHALLENGE", "QUIT":
		default:
			return errReply(codeAuthRequired, "Authentication required."), true
		}
		if c.challenge != nil && cmd.Keyword != "AUTHENTICATE" && cmd.Keyword != "QUIT" {
			return errReply(codeAuthRequired, "Authentication required."), true
		}
	}
	switch cmd.Keyword {
	case "QUIT":
		return reply{{code: codeOK, text: "closing connection"}}, true
	case "PROTOCOLINFO":
		return c.protocolInfo(cmd.Args)
	case "AUTHCHALLENGE":
		return c.authChallenge(cmd.Args)
	case "AUTHENTICATE":
		return c.authenticate(cmd.Args)
	case "GETINFO":
		return c.getInfo(cmd.Args), false
	case "GETCONF":
		return c.getConf(cmd.Args), false
	case "SETCONF":
		return c.setConf(cmd.Args, false), false
	case "RESETCONF":
		return c.setConf(cmd.Args, true), false
	case "SETEVENTS":
		return c.setEvents(cmd.Args), false
	case "SIGNAL":
		return c.signal(cmd.Args)
	case "USEFEATURE":
		args, err := ParseArgs(cmd.Args)
		if err != nil {
			return errReply(codeBadArgs, err.Error()), false
		}
		for _, a := range args {
			if f := strings.ToUpper(a.Key); f != "VERBOSE_NAMES" && f != "EXTENDED_EVENTS" {
				return errReply(codeUnknownArg, fmt.Sprintf("Unrecognized feature %q", a.Key)), false
			}
		}
		return okReply(), false // both are always on since Tor 0.2.2
	case "TAKEOWNERSHIP":
		// As Tor: the node stops when this connection closes (stem's
		// launch_tor and nyx's own nodes use it). Other controllers'
		// connections keep no such tie.
		c.owner = true
		return okReply(), false
	case "DROPOWNERSHIP":
		c.owner = false
		return okReply(), false
	case "SAVECONF":
		return c.saveConf(cmd.Args), false
	case "LOADCONF":
		return errReply(codeNotAvailable, "veil does not take a configuration from the control port: edit "+c.s.cfg.Backend.ConfigFile()+" and send SIGNAL RELOAD"), false
	}
	return errReply(codeUnknownCmd, fmt.Sprintf("Unrecognized command %q", trunc(cmd.Keyword))), false
}

func (c *conn) protocolInfo(args string) (reply, bool) {
	as, err := ParseArgs(args)
	if err != nil {
		return errReply(codeBadArgs, err.Error()), false
	}
	for _, a := range as {
		if a.HasValue || strings.Trim(a.Key, "0123456789") != "" {
			return errReply(codeBadArgs, "PROTOCOLINFO takes protocol versions (numbers)"), false
		}
	}
	methods := []string{"COOKIE", "SAFECOOKIE"}
	if c.s.cfg.HashedPassword != "" {
		methods = append(methods, "HASHEDPASSWORD")
	}
	if c.s.cfg.NullAuth {
		methods = append([]string{"NULL"}, methods...)
	}
	var r reply
	r.add(codeOK, "PROTOCOLINFO 1")
	r.add(codeOK, "AUTH METHODS="+strings.Join(methods, ",")+" COOKIEFILE="+Quote(c.s.cookiePath))
	r.add(codeOK, "VERSION Tor="+Quote(TorVersion))
	r.add(codeOK, "OK")
	return r, false
}

func (c *conn) authChallenge(args string) (reply, bool) {
	as, err := ParseArgs(args)
	if err != nil || len(as) != 2 || as[0].HasValue {
		return errReply(codeBadArgs, "AUTHCHALLENGE takes SAFECOOKIE and a client nonce"), true
	}
	if strings.ToUpper(as[0].Key) != "SAFECOOKIE" {
		return errReply(codeBadArgs, "AUTHCHALLENGE only supports SAFECOOKIE authentication"), true
	}
	var nonce []byte
	switch n := as[1]; {
	case n.Quoted && n.Key == "":
		nonce = []byte(n.Value)
	case !n.HasValue:
		if nonce, err = hex.DecodeString(n.Key); err != nil {
			return errReply(codeBadArgs, "Invalid base16 client nonce"), true
		}
	default:
		return errReply(codeBadArgs, "Invalid base16 client nonce"), true
	}
	if c.authed {
		return errReply(codeUnknownCmd, "AUTHCHALLENGE is for authenticating, and this connection is authenticated"), false
	}
	sc := &safeCookie{clientNonce: nonce, serverNonce: make([]byte, 32)}
	if _, err := rand.Read(sc.serverNonce); err != nil {
		return errReply(codeFailed, "no randomness"), true
	}
	c.challenge = sc
	serverHash, _ := SafeCookieHashes(c.s.cookie[:], sc.clientNonce, sc.serverNonce)
	return reply{{code: codeOK, text: fmt.Sprintf("AUTHCHALLENGE SERVERHASH=%X SERVERNONCE=%X", serverHash, sc.serverNonce)}}, false
}

func (c *conn) authenticate(args string) (reply, bool) {
	if c.authed {
		return okReply(), false
	}
	as, err := ParseArgs(args)
	if err != nil || len(as) > 1 || len(as) == 1 && as[0].HasValue && !as[0].Quoted {
		return errReply(codeAuthFailed, "Authentication failed: bad argument"), true
	}
	var secret []byte
	isHex := false
	if len(as) == 1 {
		if as[0].Quoted {
			secret = []byte(as[0].Value)
		} else if secret, err = hex.DecodeString(as[0].Key); err != nil {
			return errReply(codeAuthFailed, "Authentication failed: argument is neither hex nor a quoted string"), true
		} else {
			isHex = true
		}
	}
	ok := false
	msg := "Password did not match HashedControlPassword *or* authentication cookie."
	switch {
	case c.challenge != nil:
		_, want := SafeCookieHashes(c.s.cookie[:], c.challenge.clientNonce, c.challenge.serverNonce)
		c.challenge = nil
		ok = isHex && subtle.ConstantTimeCompare(secret, want) == 1
		msg = "Safe cookie response did not match expected value."
	case len(as) == 0:
		ok = c.s.cfg.NullAuth
		msg = "No secret given and NULL authentication is off."
	default:
		if c.s.cfg.NullAuth {
			ok = true
			break
		}
		if isHex && len(secret) == CookieLen && subtle.ConstantTimeCompare(secret, c.s.cookie[:]) == 1 {
			ok = true
			break
		}
		if c.s.cfg.HashedPassword != "" {
			ok, _ = CheckPassword(c.s.cfg.HashedPassword, string(secret))
		}
		if !ok && isHex && len(secret) == CookieLen {
			msg = "Authentication cookie did not match expected value."
		}
	}
	if !ok {
		return errReply(codeAuthFailed, "Authentication failed: "+msg), true
	}
	c.authed = true
	c.nc.SetReadDeadline(time.Time{})
	return okReply(), false
}

func (c *conn) setEvents(args string) reply {
	as, err := ParseArgs(args)
	if err != nil {
		return errReply(codeBadArgs, err.Error())
	}
	want := map[string]bool{}
	for i, a := range as {
		name := strings.ToUpper(a.Key)
		if i == 0 && name == "EXTENDED" && !a.HasValue {
			continue
		}
		known := false
		for _, e := range EventNames {
			known = known || e == name
		}
		if !known || a.HasValue {
			return errReply(codeUnknownArg, fmt.Sprintf("Unrecognized event %q", trunc(a.Key+a.Value)))
		}
		want[name] = true
	}
	c.subs.set(want)
	c.s.updateLogLevel()
	return okReply()
}

func (c *conn) signal(args string) (reply, bool) {
	as, err := ParseArgs(args)
	if err != nil || len(as) != 1 || as[0].HasValue {
		return errReply(codeBadArgs, "SIGNAL takes one signal name"), false
	}
	sig, ok := signalNames[strings.ToUpper(as[0].Key)]
	if !ok {
		return errReply(codeUnknownArg, fmt.Sprintf("Unrecognized signal code %q", trunc(as[0].Key))), false
	}
	b := c.s.cfg.Backend
	switch sig {
	case "NEWNYM":
		b.NewNym()
	case "RELOAD":
		if err := b.Reload(); err != nil {
			return errReply(codeFailed, "Reload failed: "+err.Error()), false
		}
	case "SHUTDOWN", "HALT":
		// Answer first: the node's stopping closes this connection.
		c.write(okReply().appendTo(nil))
		b.Shutdown()
		return nil, true
	}
	switch sig {
	case "RELOAD", "DUMP", "DEBUG", "NEWNYM", "CLEARDNSCACHE":
		c.s.emit("SIGNAL", "SIGNAL "+sig)
	}
	return okReply(), false
}
