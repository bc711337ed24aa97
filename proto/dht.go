package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// DHTType is the first byte of every DHT RPC.
type DHTType uint8

// DHT RPC types. Requests have odd numbers, their answers the next even one;
// FIND_VALUE is answered by VALUE when the node holds records for the key,
// by NODES otherwise. Types 1..10 are Kademlia's; DESCRIPTOR_REQUEST and
// DESCRIPTOR are the exchange of signed node descriptors between the two
// ends of a link, which rides in the same var cell.
const (
	DHTPing      DHTType = 1  // request: are you alive?
	DHTPong      DHTType = 2  // answer to PING
	DHTFindNode  DHTType = 3  // request: the nodes you know closest to Target
	DHTNodes     DHTType = 4  // answer to FIND_NODE or FIND_VALUE: Contacts
	DHTFindValue DHTType = 5  // request: provider records for Target
	DHTValue     DHTType = 6  // answer to FIND_VALUE: Records and closer Contacts
	DHTStore     DHTType = 7  // request: keep Record
	DHTStored    DHTType = 8  // answer to STORE: Status
	DHTFindPeer  DHTType = 9  // request to a bridge: Peer is the asker (DB_FIND_PEER)
	DHTFoundPeer DHTType = 10 // answer to FIND_PEER: Found (DB_FOUND_PEER)

	DHTDescriptorRequest DHTType = 11 // request: your signed node descriptor
	DHTDescriptor        DHTType = 12 // answer to DESCRIPTOR_REQUEST: the answerer's own Descriptor

	dhtLastType = DHTDescriptor
)

// IsRequest reports whether t is a request (it carries the sender's address
// and expects an answer).
func (t DHTType) IsRequest() bool { return t >= DHTPing && t <= dhtLastType && t%2 == 1 }

// Response returns the answer type a request of type t expects (for
// FIND_VALUE, DHTValue; DHTNodes is also a valid answer).
func (t DHTType) Response() DHTType {
	if t.IsRequest() {
		return t + 1
	}
	return 0
}

func (t DHTType) String() string {
	switch t {
	case DHTPing:
		return "PING"
	case DHTPong:
		return "PONG"
	case DHTFindNode:
		return "FIND_NODE"
	case DHTNodes:
		return "NODES"
	case DHTFindValue:
		return "FIND_VALUE"
	case DHTValue:
		return "VALUE"
	case DHTStore:
		return "STORE"
	case DHTStored:
		return "STORED"
	case DHTFindPeer:
		return "FIND_PEER"
	case DHTFoundPeer:
		return "FOUND_PEER"
	case DHTDescriptorRequest:
		return "DESCRIPTOR_REQUEST"
	case DHTDescriptor:
		return "DESCRIPTOR"
	}
	return fmt.Sprintf("DHT(%d)", uint8(t))
}

// DHTStoreStatus is the STORED answer's verdict.
type DHTStoreStatus uint8

// STORE verdicts.
const (
	StoreOK       DHTStoreStatus = 0 // record kept
	StoreRejected DHTStoreStatus = 1 // record invalid (signature, expiry, owner)
	StoreFull     DHTStoreStatus = 2 // record valid but the node has no room
)

// Limits of the DHT RPCs veil chose. Together they keep every RPC well under
// MaxVarPayload (see MaxDHTMessage).
const (
	// MaxDHTContacts bounds the contacts in one NODES or VALUE answer
	// (k = 8 plus room for a larger k).
	MaxDHTContacts = 16
	// MaxDHTRecords bounds the provider records in one VALUE answer.
	MaxDHTRecords = 16
	// MaxDHTMessage bounds one encoded DHT RPC: it travels in one var cell.
	MaxDHTMessage = MaxVarPayload
	// MaxProviderRecord bounds one encoded provider record (with an IPv6
	// address it is exactly this long).
	MaxProviderRecord = 2*IDSize + OnionKeySize + dhtMaxAddr + 2 + IdentityKeySize + 8 + SignatureSize
	// dhtHeaderSize is [type 1B][transaction ID 8B].
	dhtHeaderSize = 1 + 8
	// dhtMaxAddr is [IP length 1B][IPv6 16B][port 2B].
	dhtMaxAddr = 1 + 16 + 2
	// ContactSize bounds one encoded contact.
	maxContactSize = IDSize + dhtMaxAddr
	// MaxPieces is the largest P of a provider record: 0..3 = 25..100 %.
	MaxPieces = 3
)

// Errors of provider record verification.
var (
	ErrRecordSignature = errors.New("proto: provider record signature does not verify")
	ErrRecordOwner     = errors.New("proto: provider record ORDB ID does not match its identity key")
	ErrRecordExpired   = errors.New("proto: provider record expired")
)

// DHTContact is a node of the DHT as RPCs carry it: [ID 20B][addr].
type DHTContact struct {
	ID   NodeID
	Addr netip.AddrPort
}

// Len is the encoded size.
func (c DHTContact) Len() int { return IDSize + dhtAddrLen(c.Addr) }

// Append encodes c onto b.
func (c DHTContact) Append(b []byte) []byte {
	b = append(b, c.ID[:]...)
	return dhtAppendAddr(b, c.Addr)
}

// dhtAddrLen is the encoded size of an address:
//
//	[IP length 1B = 0|4|16][IP][port 2B, only when the IP is present]
func dhtAddrLen(a netip.AddrPort) int {
	switch {
	case !a.IsValid():
		return 1
	case a.Addr().Is4():
		return 1 + 4 + 2
	}
	return 1 + 16 + 2
}

func dhtAppendAddr(b []byte, a netip.AddrPort) []byte {
	switch {
	case !a.IsValid():
		return append(b, 0)
	case a.Addr().Is4():
		ip := a.Addr().As4()
		b = append(b, 4)
		b = append(b, ip[:]...)
	default:
		ip := a.Addr().As16()
		b = append(b, 16)
		b = append(b, ip[:]...)
	}
	return binary.BigEndian.AppendUint16(b, a.Port())
}

func dhtParseAddr(r *reader) netip.AddrPort {
	n := r.byte()
	var ip netip.Addr
	switch {
	case r.err != nil:
		return netip.AddrPort{}
	case n == 0:
		return netip.AddrPort{}
	case n == 4:
		if p := r.take(4); p != nil {
			ip = netip.AddrFrom4([4]byte(p))
		}
	case n == 16:
		if p := r.take(16); p != nil {
			ip = netip.AddrFrom16([16]byte(p))
		}
	default:
		r.fail(fmt.Errorf("%s: %w: IP length %d", r.what, ErrBadLength, n))
	}
	port := r.uint16()
	if r.err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ip, port)
}

func dhtParseContact(r *reader) DHTContact {
	var c DHTContact
	if p := r.take(IDSize); p != nil {
		c.ID = NodeID(p)
	}
	c.Addr = dhtParseAddr(r)
	return c
}

// ProviderRecord says that an ORDB can serve the content Key. The ORDB signs
// it with its identity key, so no other node can forge or alter it:
//
//	[hash_name 20B][ORDB ID 20B][onion key 32B][addr]
//	[P 1B = 0..3][F 1B = 0|1][identity key 32B][expires 8B unix seconds]
//	[signature 64B]
//
// addr is [IP length 1B = 0|4|16][IP][port 2B when the IP is present]. The
// Peersm STORE ['abcd', ID, modulus, IP:port, P] with the F flag of its
// DB_INFO, the onion key in the modulus slot. The ORDB ID must be
// NodeIDFromKey(identity key); the signature covers SignedBytes.
type ProviderRecord struct {
	Key         HashName
	ORDB        NodeID
	OnionKey    []byte // OnionKeySize bytes; aliases the parsed buffer
	Addr        netip.AddrPort
	Pieces      uint8  // P: 0..MaxPieces, 25 % to 100 %
	Facilitator bool   // F: the ORDB can fetch from BitTorrent
	IdentityKey []byte // Ed25519 public key, IdentityKeySize bytes
	Expires     uint64 // unix seconds
	Signature   []byte // SignatureSize bytes
}

// recordDomain separates provider record signatures from every other
// signature an identity key makes.
const recordDomain = "veil dht provider record v1\x00"

// Len is the encoded size.
func (p ProviderRecord) Len() int {
	return 2*IDSize + len(p.OnionKey) + dhtAddrLen(p.Addr) + 2 + len(p.IdentityKey) + 8 + len(p.Signature)
}

func (p ProviderRecord) appendBody(b []byte) []byte {
	b = append(b, p.Key[:]...)
	b = append(b, p.ORDB[:]...)
	b = append(b, p.OnionKey...)
	b = dhtAppendAddr(b, p.Addr)
	f := byte(0)
	if p.Facilitator {
		f = 1
	}
	b = append(b, p.Pieces, f)
	b = append(b, p.IdentityKey...)
	return binary.BigEndian.AppendUint64(b, p.Expires)
}

// Append encodes p onto b. Fields are assumed valid (see Validate).
func (p ProviderRecord) Append(b []byte) []byte {
	return append(p.appendBody(b), p.Signature...)
}

// SignedBytes is what the signature covers: a domain string, then every
// field before the signature.
func (p ProviderRecord) SignedBytes() []byte {
	return p.appendBody([]byte(recordDomain))
}

// Validate checks field sizes and values (not the signature: see Verify).
func (p ProviderRecord) Validate() error {
	switch {
	case len(p.OnionKey) != OnionKeySize:
		return fmt.Errorf("provider record: %w: onion key of %d bytes", ErrBadLength, len(p.OnionKey))
	case len(p.IdentityKey) != IdentityKeySize:
		return fmt.Errorf("provider record: %w: identity key of %d bytes", ErrBadLength, len(p.IdentityKey))
	case len(p.Signature) != SignatureSize:
		return fmt.Errorf("provider record: %w: signature of %d bytes", ErrBadLength, len(p.Signature))
	case p.Pieces > MaxPieces:
		return fmt.Errorf("provider record: %w: P = %d", ErrBadValue, p.Pieces)
	}
	return nil
}

func parseProviderRecord(r *reader) ProviderRecord {
	var p ProviderRecord
	if b := r.take(IDSize); b != nil {
		p.Key = HashName(b)
	}
	if b := r.take(IDSize); b != nil {
		p.ORDB = NodeID(b)
	}
	p.OnionKey = r.take(OnionKeySize)
	p.Addr = dhtParseAddr(r)
	p.Pieces = r.byte()
	f := r.byte()
	p.IdentityKey = r.take(IdentityKeySize)
	p.Expires = r.uint64()
	p.Signature = r.take(SignatureSize)
	switch {
	case r.err != nil:
	case p.Pieces > MaxPieces:
		r.fail(fmt.Errorf("%s: %w: P = %d", r.what, ErrBadValue, p.Pieces))
	case f > 1:
		r.fail(fmt.Errorf("%s: %w: F = %d", r.what, ErrBadValue, f))
	}
	p.Facilitator = f == 1
	if r.err != nil {
		return ProviderRecord{}
	}
	return p
}

// ParseProviderRecord decodes exactly one provider record. Byte slices alias
// b. It checks the layout only; call Verify before trusting the record.
func ParseProviderRecord(b []byte) (ProviderRecord, error) {
	if len(b) > MaxProviderRecord {
		return ProviderRecord{}, fmt.Errorf("provider record: %w: %d bytes", ErrTooLong, len(b))
	}
	r := reader{b: b, what: "provider record"}
	p := parseProviderRecord(&r)
	if err := r.end(); err != nil {
		return ProviderRecord{}, err
	}
	return p, nil
}

// DHTMessage is one DHT RPC. Every RPC starts with
//
//	[type 1B][transaction ID 8B, big-endian]
//
// and an answer repeats its request's transaction ID. Requests then carry
// the sender's own listening address ([addr], IP length 0 when it accepts no
// links), then by type:
//
//	PING        -
//	FIND_NODE   [target 20B]
//	FIND_VALUE  [key 20B]
//	STORE       [record length 1B][provider record]
//	FIND_PEER   [DB_FIND_PEER record] (to the end)
//	DESCRIPTOR_REQUEST -
//
// and answers:
//
//	PONG        -
//	NODES       [count 1B <= 16][contact]...
//	VALUE       [count 1B 1..16]([record length 1B][provider record])...
//	            [count 1B <= 16][contact]...
//	STORED      [status 1B]
//	FOUND_PEER  [count 1B 1..16][DB_FOUND_PEER records] (to the end; the
//	            count lets a receiver tell a cut answer from a short one)
//	DESCRIPTOR  [node descriptor] (to the end; see NodeDescriptor)
//
// A DESCRIPTOR carries the answering node's own descriptor: a node vouches
// only for itself, so a receiver keeps it only when its ID is the link
// peer's. A contact is [ID 20B][addr]. Only the fields of Type are encoded; the
// others are ignored by Append and left zero by ParseDHTMessage.
type DHTMessage struct {
	Type   DHTType
	TxID   uint64
	Sender netip.AddrPort // requests: where the sender accepts links
	Target NodeID         // FIND_NODE, FIND_VALUE

	Contacts []DHTContact     // NODES, VALUE
	Records  []ProviderRecord // VALUE
	Record   ProviderRecord   // STORE
	Status   DHTStoreStatus   // STORED
	Peer     DBPeer           // FIND_PEER
	Found    DBFoundPeer      // FOUND_PEER

	Descriptor NodeDescriptor // DESCRIPTOR
}

// Len is the encoded size.
func (m DHTMessage) Len() int {
	n := dhtHeaderSize
	if m.Type.IsRequest() {
		n += dhtAddrLen(m.Sender)
	}
	switch m.Type {
	case DHTFindNode, DHTFindValue:
		n += IDSize
	case DHTStore:
		n += 1 + m.Record.Len()
	case DHTFindPeer:
		n += m.Peer.Len()
	case DHTNodes:
		n += 1
		for _, c := range m.Contacts {
			n += c.Len()
		}
	case DHTValue:
		n += 2
		for _, r := range m.Records {
			n += 1 + r.Len()
		}
		for _, c := range m.Contacts {
			n += c.Len()
		}
	case DHTStored:
		n++
	case DHTFoundPeer:
		n += 1 + m.Found.Len()
	case DHTDescriptor:
		n += m.Descriptor.Len()
	}
	return n
}

// Append encodes m onto b. Fields are assumed valid (see Validate).
func (m DHTMessage) Append(b []byte) []byte {
	b = append(b, byte(m.Type))
	b = binary.BigEndian.AppendUint64(b, m.TxID)
	if m.Type.IsRequest() {
		b = dhtAppendAddr(b, m.Sender)
	}
	switch m.Type {
	case DHTFindNode, DHTFindValue:
		b = append(b, m.Target[:]...)
	case DHTStore:
		b = append(b, byte(m.Record.Len()))
		b = m.Record.Append(b)
	case DHTFindPeer:
		b = m.Peer.Append(b)
	case DHTNodes:
		b = appendContacts(b, m.Contacts)
	case DHTValue:
		b = append(b, byte(len(m.Records)))
		for _, r := range m.Records {
			b = append(b, byte(r.Len()))
			b = r.Append(b)
		}
		b = appendContacts(b, m.Contacts)
	case DHTStored:
		b = append(b, byte(m.Status))
	case DHTFoundPeer:
		b = append(b, byte(len(m.Found.Peers)))
		b = m.Found.Append(b)
	case DHTDescriptor:
		b = m.Descriptor.Append(b)
	}
	return b
}

func appendContacts(b []byte, cs []DHTContact) []byte {
	b = append(b, byte(len(cs)))
	for _, c := range cs {
		b = c.Append(b)
	}
	return b
}

// Validate checks that m can be encoded and parsed back: a known type,
// bounded lists, valid records and peers, and a total size within
// MaxDHTMessage.
func (m DHTMessage) Validate() error {
	switch m.Type {
	case DHTPing, DHTPong, DHTFindNode, DHTFindValue, DHTDescriptorRequest:
	case DHTStore:
		if err := m.Record.Validate(); err != nil {
			return fmt.Errorf("dht %v: %w", m.Type, err)
		}
	case DHTFindPeer:
		if err := m.Peer.Validate(); err != nil {
			return fmt.Errorf("dht %v: %w", m.Type, err)
		}
	case DHTNodes, DHTValue:
		if len(m.Contacts) > MaxDHTContacts {
			return fmt.Errorf("dht %v: %w: %d contacts", m.Type, ErrTooLong, len(m.Contacts))
		}
		if m.Type == DHTValue {
			if len(m.Records) == 0 || len(m.Records) > MaxDHTRecords {
				return fmt.Errorf("dht %v: %w: %d records, want 1..%d", m.Type, ErrBadValue, len(m.Records), MaxDHTRecords)
			}
			for i, r := range m.Records {
				if err := r.Validate(); err != nil {
					return fmt.Errorf("dht %v record %d: %w", m.Type, i, err)
				}
			}
		}
	case DHTStored:
		if m.Status > StoreFull {
			return fmt.Errorf("dht %v: %w: status %d", m.Type, ErrBadValue, m.Status)
		}
	case DHTFoundPeer:
		if err := m.Found.Validate(); err != nil {
			return fmt.Errorf("dht %v: %w", m.Type, err)
		}
	case DHTDescriptor:
		if err := m.Descriptor.Validate(); err != nil {
			return fmt.Errorf("dht %v: %w", m.Type, err)
		}
	default:
		return fmt.Errorf("dht: %w %v", ErrUnknownCommand, m.Type)
	}
	if n := m.Len(); n > MaxDHTMessage {
		return fmt.Errorf("dht %v: %w: %d bytes", m.Type, ErrTooLong, n)
	}
	return nil
}

// ParseDHTMessage decodes exactly one DHT RPC. Byte slices in the result
// alias b. Counts are checked against their limits before anything is
// allocated; unknown types, bad lengths and trailing bytes are errors.
func ParseDHTMessage(b []byte) (DHTMessage, error) {
	var m DHTMessage
	if len(b) > MaxDHTMessage {
		return m, fmt.Errorf("dht: %w: %d bytes", ErrTooLong, len(b))
	}
	r := reader{b: b, what: "dht"}
	m.Type = DHTType(r.byte())
	m.TxID = r.uint64()
	if r.err != nil {
		return DHTMessage{}, r.err
	}
	if m.Type < DHTPing || m.Type > dhtLastType {
		return DHTMessage{}, fmt.Errorf("dht: %w %v", ErrUnknownCommand, m.Type)
	}
	r.what = "dht " + m.Type.String()
	if m.Type.IsRequest() {
		m.Sender = dhtParseAddr(&r)
	}
	switch m.Type {
	case DHTFindNode, DHTFindValue:
		if p := r.take(IDSize); p != nil {
			m.Target = NodeID(p)
		}
	case DHTStore:
		rec := r.lenPrefixed(MaxProviderRecord)
		if r.err == nil {
			rr := reader{b: rec, what: r.what + " record"}
			m.Record = parseProviderRecord(&rr)
			r.fail(rr.end())
		}
	case DHTFindPeer:
		rest := r.take(len(r.b))
		if r.err == nil {
			p, err := ParseDBPeer(rest)
			r.fail(wrapDHT(r.what, err))
			m.Peer = p
		}
	case DHTNodes:
		m.Contacts = parseContacts(&r)
	case DHTValue:
		n := int(r.byte())
		switch {
		case r.err != nil:
		case n == 0 || n > MaxDHTRecords:
			r.fail(fmt.Errorf("%s: %w: %d records, want 1..%d", r.what, ErrBadValue, n, MaxDHTRecords))
		case len(r.b) < n*(1+minProviderRecord):
			r.fail(fmt.Errorf("%s: %w: %d records in %d bytes", r.what, ErrTruncated, n, len(r.b)))
		default:
			m.Records = make([]ProviderRecord, 0, n)
			for i := 0; i < n && r.err == nil; i++ {
				rec := r.lenPrefixed(MaxProviderRecord)
				if r.err != nil {
					break
				}
				rr := reader{b: rec, what: r.what + " record"}
				p := parseProviderRecord(&rr)
				r.fail(rr.end())
				m.Records = append(m.Records, p)
			}
		}
		m.Contacts = parseContacts(&r)
	case DHTStored:
		m.Status = DHTStoreStatus(r.byte())
		if r.err == nil && m.Status > StoreFull {
			r.fail(fmt.Errorf("%s: %w: status %d", r.what, ErrBadValue, m.Status))
		}
	case DHTFoundPeer:
		n := int(r.byte())
		rest := r.take(len(r.b))
		if r.err == nil {
			f, err := ParseDBFoundPeer(rest)
			r.fail(wrapDHT(r.what, err))
			if r.err == nil && len(f.Peers) != n {
				r.fail(fmt.Errorf("%s: %w: %d records, count says %d", r.what, ErrTruncated, len(f.Peers), n))
			}
			m.Found = f
		}
	case DHTDescriptor:
		rest := r.take(len(r.b))
		if r.err == nil {
			d, err := ParseNodeDescriptor(rest)
			r.fail(wrapDHT(r.what, err))
			m.Descriptor = d
		}
	}
	if err := r.end(); err != nil {
		return DHTMessage{}, err
	}
	return m, nil
}

// minProviderRecord is the size of a provider record without an address.
const minProviderRecord = 2*IDSize + OnionKeySize + 1 + 2 + IdentityKeySize + 8 + SignatureSize

// minContact is the size of a contact without an address.
const minContact = IDSize + 1

func parseContacts(r *reader) []DHTContact {
	n := int(r.byte())
	switch {
	case r.err != nil:
		return nil
	case n > MaxDHTContacts:
		r.fail(fmt.Errorf("%s: %w: %d contacts > %d", r.what, ErrTooLong, n, MaxDHTContacts))
		return nil
	case n == 0:
		return nil
	case len(r.b) < n*minContact:
		r.fail(fmt.Errorf("%s: %w: %d contacts in %d bytes", r.what, ErrTruncated, n, len(r.b)))
		return nil
	}
	cs := make([]DHTContact, 0, n)
	for i := 0; i < n && r.err == nil; i++ {
		c := dhtParseContact(r)
		if r.err == nil {
			cs = append(cs, c)
		}
	}
	return cs
}

func wrapDHT(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}
