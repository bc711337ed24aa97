// Package control is veil's control port: the subset of Tor's control
// protocol (control-spec v1) that stem and nyx use, so that the tools
// relay operators already run can watch and script a veil node.
//
// The protocol is line based. A controller sends a command line
//
//	KEYWORD [ARGUMENTS] CRLF
//
// and the node answers with reply lines "CODE-TEXT" (more follow),
// "CODE+KEY=" (a data block follows, ended by a line holding "."), and a
// last line "CODE TEXT". Asynchronous events are replies with code 650,
// sent to connections that asked for them with SETEVENTS.
//
// Before authenticating, a connection may only send PROTOCOLINFO,
// AUTHENTICATE, AUTHCHALLENGE and QUIT. The node writes a 32-byte random
// cookie to the data directory (mode 0600); a controller proves it can
// read it either by sending it (AUTHENTICATE <hex>) or, without sending
// it, through the SAFECOOKIE challenge (AUTHCHALLENGE, then HMACs keyed as
// control-spec §3.24 says). A hashed password in Tor's form, and no
// authentication at all, are optional. A wrong secret is answered 515 and
// the connection closed.
//
// Circuits map to Tor's: an ID is the circuit's local handle, a path is
// "$" + 40 upper-case hex digits of each hop's 160-bit node ID, "~", and a
// nickname made from that ID ("veil" and its first 8 hex digits), since
// veil nodes have no nicknames of their own.
//
// The Server holds no protocol state of the node: it asks a Backend for
// what it reports and is told of circuit events (CircuitEvent), streams
// (StreamEvent) and log records (LogTee).
package control
