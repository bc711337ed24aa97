// Package window will hold the five-circuit sliding-window GET scheduler of
// the Peersm specification ("Requests"): a pure state machine that decides
// which chunk ranges to ask on which circuit, measures time to first data and
// rate per GET, replaces slow circuits and delivers chunks in order.
//
// It is empty for now; docs/PROTOCOL.md ("The window") describes what it
// will do.
package window
