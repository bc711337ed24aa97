package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"veil/circuits"
	"veil/proto"
)

// An anonymous node may link only to its bridges and its circuits' first
// hops, so it cannot ask each node for its descriptor as other nodes do
// (descx.go). It asks its bridges for the descriptors they know instead,
// as a Tor client fetches the consensus through its guard: a one-hop
// circuit to the bridge and a stream to DirDest, on which the bridge
// writes every descriptor it holds and closes. Each descriptor is signed
// by the node it describes, so a bridge can leave nodes out but forge
// none. The one-hop circuit tells the bridge nothing it did not know:
// it already has the node's address, and a directory fetch names no
// content.
//
// The answer, on the stream until it closes:
//
//	[length 2B][descriptor]   repeated, at most maxDirEntries times

// DirDest is the stream destination at which nodes with a role hand out
// the descriptors they know.
const DirDest = "veil-dir"

// maxDirEntries bounds the descriptors one answer carries.
const maxDirEntries = 1024

// maxDirAnswer bounds an answer's bytes (a descriptor is a few hundred).
const maxDirAnswer = maxDirEntries * 1024

// errDirAnswer reports a malformed directory answer.
var errDirAnswer = errors.New("node: bad directory answer")

// appendDirAnswer encodes descriptors as an answer.
func appendDirAnswer(b []byte, ds []proto.NodeDescriptor) []byte {
	for _, d := range ds[:min(len(ds), maxDirEntries)] {
		b = binary.BigEndian.AppendUint16(b, uint16(d.Len()))
		b = d.Append(b)
	}
	return b
}

// parseDirAnswer decodes an answer. It checks each descriptor's layout,
// not its signature.
func parseDirAnswer(b []byte) ([]proto.NodeDescriptor, error) {
	if len(b) > maxDirAnswer {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", errDirAnswer, len(b), maxDirAnswer)
	}
	var out []proto.NodeDescriptor
	for len(b) > 0 {
		if len(out) == maxDirEntries {
			return nil, fmt.Errorf("%w: more than %d descriptors", errDirAnswer, maxDirEntries)
		}
		if len(b) < 2 {
			return nil, fmt.Errorf("%w: truncated length", errDirAnswer)
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			return nil, fmt.Errorf("%w: descriptor of %d bytes, %d left", errDirAnswer, n, len(b)-2)
		}
		d, err := proto.ParseNodeDescriptor(b[2 : 2+n])
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errDirAnswer, err)
		}
		d.IdentityKey = bytes.Clone(d.IdentityKey)
		d.OnionKey = bytes.Clone(d.OnionKey)
		d.Signature = bytes.Clone(d.Signature)
		d.Addrs = slices.Clone(d.Addrs)
		out = append(out, d)
		b = b[2+n:]
	}
	return out, nil
}

// serveDir writes the descriptors the node knows (its own first) on s.
func (n *Node) serveDir(s *circuits.Stream) {
	defer s.Close()
	var ds []proto.NodeDescriptor
	if d := n.desc.Load(); d != nil {
		ds = append(ds, *d)
	}
	ds = append(ds, n.dir.Nodes()...)
	_ = s.SetWriteDeadline(n.now().Add(30 * time.Second))
	_, _ = s.Write(appendDirAnswer(nil, ds))
}

// fetchDir asks bridge for the descriptors it knows, through a one-hop
// circuit, and keeps those that verify. It returns how many it kept.
func (n *Node) fetchDir(ctx context.Context, bridge proto.NodeDescriptor) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	c, err := n.sw.Build(ctx, []proto.NodeDescriptor{bridge})
	if err != nil {
		return 0, fmt.Errorf("circuit to bridge %s: %w", bridge.ID.Short(), err)
	}
	defer c.Close()
	s, err := c.OpenStream(ctx, DirDest)
	if err != nil {
		return 0, fmt.Errorf("directory stream at %s: %w", bridge.ID.Short(), err)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetReadDeadline(dl)
	}
	b, err := io.ReadAll(io.LimitReader(s, maxDirAnswer+1))
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("reading the directory of %s: %w", bridge.ID.Short(), err)
	}
	ds, err := parseDirAnswer(b)
	if err != nil {
		return 0, err
	}
	kept := 0
	for _, d := range ds {
		if d.ID == n.id.ID || d.Verify(n.now()) != nil {
			continue
		}
		n.dir.Add(d)
		kept++
	}
	return kept, nil
}

// discoverAnon is the anonymous node's discovery: its bridges'
// descriptors over the links to them, then their directories.
func (n *Node) discoverAnon(ctx context.Context) {
	for _, b := range n.cfg.Load().ParsedBridges() {
		d, ok := n.dir.Get(b.ID)
		if !ok {
			n.askDescriptor(ctx, proto.DHTContact{ID: b.ID, Addr: b.Addr})
			continue // the answer comes on the link; next round uses it
		}
		if k, err := n.fetchDir(ctx, d); err != nil {
			n.log.Debug("directory from a bridge", "bridge", b.ID.Short(), "err", err)
		} else {
			n.log.Debug("directory from a bridge", "bridge", b.ID.Short(), "descriptors", k)
		}
	}
}
