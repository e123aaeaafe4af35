// Command nimbus is a Cloud Hypervisor compatible VMM. The command-line
// parsing lives in internal/cli; run.go wires the parsed options to the
// control loop (internal/vmm), the API server (internal/api) and the event
// monitor (internal/events).
package main

import (
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/cli"
	"github.com/nimbus-vmm/nimbus/internal/vm"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// machineFactory is the one place that chooses what builds a VM at boot:
// the KVM machine (internal/vm), which says clearly when /dev/kvm is
// missing. It logs to the VMM's logger (guest exits, vCPU faults with
// registers).
func machineFactory(log *slog.Logger) vmm.MachineFactory {
	return vm.Factory(log)
}

func main() {
	// As upstream's main: everything the VMM creates (API socket, lock,
	// log and event files) is owner-only.
	unix.Umask(0o077)
	if filepath.Base(os.Args[0]) == "cloud-hypervisor" {
		cli.DisplayName = "Cloud Hypervisor"
	}
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr, runVMM))
}
