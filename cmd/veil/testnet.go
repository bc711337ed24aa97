package main

import (
	"context"
	"flag"
	"fmt"
)

func setupTestnet(fs *flag.FlagSet) func(context.Context, *env) error {
	nodes := fs.Int("nodes", 8, "how many nodes the local network has")
	return func(_ context.Context, e *env) error {
		if len(e.args) != 0 {
			return errUsage
		}
		if *nodes < 1 {
			return fmt.Errorf("-nodes must be at least 1, got %d", *nodes)
		}
		fmt.Fprintf(e.stdout, "veil testnet: not available yet (%d nodes requested).\n"+
			"It will start a whole network on 127.0.0.1 in this process, publish content\n"+
			"and fetch it through 3-hop circuits once the circuits, kademlia, chunkstore\n"+
			"and ORDB issues land.\n", *nodes)
		return nil
	}
}
