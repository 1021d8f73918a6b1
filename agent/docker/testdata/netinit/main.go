// Command netinit is the network init alone, for the executor's tests: the
// agent binary plays this part in production.
package main

import (
	"fmt"
	"os"

	"github.com/skiffhq/skiff/agent/netinit"
)

func main() {
	if netinit.IsInit() {
		os.Exit(netinit.Main())
	}
	fmt.Fprintln(os.Stderr, "netinit: run me as", netinit.Path)
	os.Exit(2)
}
