package proto

import "fmt"

// MaxP is the highest DB_INFO P value.
const MaxP = 3

// DBInfo is the DB_INFO message a peer sends its ORDBs to advertise how
// much of a content it holds:
//
//	[hash_name length 1B = 20][hash_name 20B][P 1B = 0..3][F 1B, optional]
//
// P is the share held: 0 = 25%, 1 = 50%, 2 = 75%, 3 = 100%. F is present
// (as the byte 1) only when the sender is a facilitator, so every DBInfo
// has exactly one encoding; a present F byte other than 1 is an error.
type DBInfo struct {
	HashName    HashName
	P           uint8 // 0..MaxP
	Facilitator bool  // the optional F byte
}

// Command returns RelayDBInfo.
func (DBInfo) Command() RelayCommand { return RelayDBInfo }

// Percent returns the share P stands for (25, 50, 75 or 100).
func (m DBInfo) Percent() int { return 25 * (int(m.P) + 1) }

// Len is the encoded size.
func (m DBInfo) Len() int {
	if m.Facilitator {
		return 1 + IDSize + 2
	}
	return 1 + IDSize + 1
}

// Append encodes m onto b. Fields are assumed valid (see Validate).
func (m DBInfo) Append(b []byte) []byte {
	b = appendHashName(b, m.HashName)
	b = append(b, m.P)
	if m.Facilitator {
		b = append(b, 1)
	}
	return b
}

// Validate checks P.
func (m DBInfo) Validate() error {
	if m.P > MaxP {
		return fmt.Errorf("db_info: %w: P %d > %d", ErrBadValue, m.P, MaxP)
	}
	return nil
}

// ParseDBInfo decodes a DB_INFO message.
func ParseDBInfo(b []byte) (DBInfo, error) {
	var m DBInfo
	r := reader{b: b, what: "db_info"}
	m.HashName = parseHashName(&r)
	m.P = r.byte()
	if r.err == nil && len(r.b) > 0 {
		f := r.byte()
		if f != 1 {
			r.fail(fmt.Errorf("db_info: %w: F %d, want absent or 1", ErrBadValue, f))
		}
		m.Facilitator = true
	}
	if err := r.end(); err != nil {
		return DBInfo{}, err
	}
	if err := m.Validate(); err != nil {
		return DBInfo{}, err
	}
	return m, nil
}
