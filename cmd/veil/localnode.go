package main

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	"veil/chunkstore"
	"veil/circuits"
	"veil/circuits/link"
	"veil/ordb"
	"veil/proto"
)

// localNode is one node of a testnet: identity, links on 127.0.0.1, circuit
// switch, chunk store and the ORDB service at the end of others' circuits.
type localNode struct {
	id    *circuits.Identity
	links *link.Links
	sw    *circuits.Switch
	store *chunkstore.Store
	desc  proto.NodeDescriptor
}

// ordbDest is the stream destination at which nodes serve DB_* queries.
const ordbDest = "ordb"

func startLocalNode(dir string, flags uint8) (*localNode, error) {
	id, err := circuits.NewEphemeralIdentity()
	if err != nil {
		return nil, err
	}
	n := &localNode{id: id}
	cfg := chunkstore.DefaultConfig(filepath.Join(dir, fmt.Sprintf("node-%s.db", id.ID.Short())))
	if n.store, err = chunkstore.Open(cfg); err != nil {
		return nil, err
	}
	lcfg := link.DefaultConfig()
	lcfg.MaxInboundPerSubnet = 0 // every node of the test network is on 127.0.0.1
	n.links = link.NewLinks(id.Key, lcfg)
	swCfg := circuits.DefaultSwitchConfig()
	swCfg.Flags = flags
	swCfg.AllowPrivateExtend = true // the relays are on 127.0.0.1
	if n.sw, err = circuits.NewSwitch(id, n.links, swCfg); err != nil {
		n.close()
		return nil, err
	}
	n.links.SetHandlers(link.Handlers{Cell: n.sw.HandleCell, Closed: n.sw.HandleClosed})
	srv := &ordb.Server{Store: n.store}
	n.sw.Handle(ordbDest, func(s *circuits.Stream) { srv.Serve(s) })
	addr, err := n.links.Listen("127.0.0.1:0")
	if err != nil {
		n.close()
		return nil, err
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		n.close()
		return nil, err
	}
	if n.desc, err = id.Descriptor([]netip.AddrPort{ap}, flags, 24*time.Hour); err != nil {
		n.close()
		return nil, err
	}
	return n, nil
}

func (n *localNode) close() {
	if n.sw != nil {
		n.sw.Close()
	}
	if n.links != nil {
		n.links.Close()
	}
	if n.store != nil {
		n.store.Close()
	}
}
