// Command nimbus-remote drives a Nimbus (or Cloud Hypervisor) VMM over its
// API socket. It is a drop-in for upstream's ch-remote: the same
// subcommands, argument syntax, request bytes, output and exit codes.
//
// Error output names the program as invoked: "nimbus-remote", or
// "ch-remote" when installed under that name (e.g. a symlink), so scripts
// written against ch-remote see byte-identical messages.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
