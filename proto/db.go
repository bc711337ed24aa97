package proto

import "fmt"

// DBMessage is any DB_* message: the payload of one (possibly multi-cell,
// see DBFramer and Assembler) message of a circuit stream.
type DBMessage interface {
	// Command is the relay command the message travels under.
	Command() RelayCommand
	// Len is the encoded size.
	Len() int
	// Append encodes the message onto b.
	Append(b []byte) []byte
}

var (
	_ DBMessage = DBQuery{}
	_ DBMessage = DBConnected{}
	_ DBMessage = DBData{}
	_ DBMessage = DBProof{}
	_ DBMessage = DBInfo{}
	_ DBMessage = DBFindPeer{}
	_ DBMessage = DBFoundPeer{}
	_ DBMessage = DBEnd{}
	_ DBMessage = DBAnnounce{}
	_ DBMessage = DBStreamInfo{}
	_ DBMessage = DBLiveStart{}
)

// ParseDB decodes the DB_* message msg sent under relay command cmd (as
// returned by Assembler.Feed). On error the message is nil. Byte slices in
// the result alias msg. The typed parsers (ParseDBData, ...) do not
// allocate; boxing the result in an interface here may.
func ParseDB(cmd RelayCommand, msg []byte) (DBMessage, error) {
	switch cmd {
	case RelayDBQuery:
		return box(ParseDBQuery(msg))
	case RelayDBConnected:
		return box(ParseDBConnected(msg))
	case RelayDBData:
		return box(ParseDBData(msg))
	case RelayDBProof:
		return box(ParseDBProof(msg))
	case RelayDBInfo:
		return box(ParseDBInfo(msg))
	case RelayDBFindPeer:
		return box(ParseDBFindPeer(msg))
	case RelayDBFoundPeer:
		return box(ParseDBFoundPeer(msg))
	case RelayDBEnd:
		return box(ParseDBEnd(msg))
	case RelayDBAnnounce:
		return box(ParseDBAnnounce(msg))
	case RelayDBStreamInfo:
		return box(ParseDBStreamInfo(msg))
	case RelayDBLiveStart:
		return box(ParseDBLiveStart(msg))
	}
	return nil, fmt.Errorf("db message: %w %v", ErrUnknownCommand, cmd)
}

// box returns m as a DBMessage, or a nil DBMessage with err.
func box[M DBMessage](m M, err error) (DBMessage, error) {
	if err != nil {
		return nil, err
	}
	return m, nil
}

// parseHashName reads a [length 1B = 20][hash_name 20B] field.
func parseHashName(r *reader) HashName {
	var h HashName
	if n := r.byte(); r.err == nil && n != IDSize {
		r.fail(fmt.Errorf("%s: %w: hash_name length %d, want %d", r.what, ErrBadLength, n, IDSize))
	}
	copy(h[:], r.take(IDSize))
	return h
}

func appendHashName(b []byte, h HashName) []byte {
	b = append(b, IDSize)
	return append(b, h[:]...)
}
