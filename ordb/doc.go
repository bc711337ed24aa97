// Package ordb will hold the ORDB function (the last hop of peers'
// circuits: serve chunks, or relay a query to a peer or ORDB that has them)
// and the peer's serving side, per the Peersm specification's "Requests" and
// "Handling the lists in the ORDBs".
//
// It is empty until the ORDB issue is taken; see ../shared/DESIGN.md.
package ordb
