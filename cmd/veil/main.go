// Command veil is the one binary of veil: a long-lived node, and the tool a
// person uses to publish, fetch and stream content anonymously.
//
//	veil <command> [flags] [args]
//
// Run `veil help` for the list of commands and `veil <command> --help` for
// one command's flags.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
