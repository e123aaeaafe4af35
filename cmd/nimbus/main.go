// Command nimbus is a Cloud Hypervisor compatible VMM. The command-line
// logic lives in internal/cli; this file only wires it to the process.
package main

import (
	"os"

	"github.com/nimbus-vmm/nimbus/internal/cli"
)

func main() {
	// The integrator passes the VMM runner here.
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr, nil))
}
