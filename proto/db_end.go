package proto

import "fmt"

// DBEndReason says why a DB_* exchange on a stream ended.
type DBEndReason uint8

// DB_END reasons (the Peersm specification's numbering).
const (
	// DBEndUnavailable: the content (or the query's chunks) cannot be found,
	// or the query's counter reached MaxCounter.
	DBEndUnavailable DBEndReason = 0
	// DBEndFinished: aborted by the requesting party.
	DBEndFinished DBEndReason = 1
	// DBEndDestroyed: destroyed by the serving party.
	DBEndDestroyed DBEndReason = 2
	maxDBEndReason             = DBEndDestroyed
)

func (r DBEndReason) String() string {
	switch r {
	case DBEndUnavailable:
		return "UNAVAILABLE"
	case DBEndFinished:
		return "FINISHED"
	case DBEndDestroyed:
		return "DESTROYED"
	}
	return fmt.Sprintf("DB_END_REASON(%d)", uint8(r))
}

// DBEnd is the DB_END message: [reason 1B].
type DBEnd struct {
	Reason DBEndReason
}

// Command returns RelayDBEnd.
func (DBEnd) Command() RelayCommand { return RelayDBEnd }

// Len is the encoded size.
func (DBEnd) Len() int { return 1 }

// Append encodes m onto b.
func (m DBEnd) Append(b []byte) []byte { return append(b, byte(m.Reason)) }

// Validate checks the reason.
func (m DBEnd) Validate() error {
	if m.Reason > maxDBEndReason {
		return fmt.Errorf("db_end: %w: reason %d", ErrBadValue, m.Reason)
	}
	return nil
}

// ParseDBEnd decodes a DB_END message.
func ParseDBEnd(b []byte) (DBEnd, error) {
	r := reader{b: b, what: "db_end"}
	m := DBEnd{Reason: DBEndReason(r.byte())}
	if err := r.end(); err != nil {
		return DBEnd{}, err
	}
	if err := m.Validate(); err != nil {
		return DBEnd{}, err
	}
	return m, nil
}
