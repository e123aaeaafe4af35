package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/nimbus-vmm/nimbus/internal/cli"
	"github.com/nimbus-vmm/nimbus/pkg/client"
)

// Exit codes: ch-remote exits 1 on any failure; clap exits 2 on usage
// errors.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// run is the whole program: args[0] is the name it was invoked as.
// It writes the reply body (if any) to stdout and errors to stderr, and
// returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	prog := "nimbus-remote"
	if len(args) > 0 && args[0] != "" {
		prog = filepath.Base(args[0])
	}
	inv, code := parseArgs(prog, args[1:], stdout, stderr)
	if inv == nil {
		return code
	}
	if inv.socket == "" {
		fmt.Fprintln(stderr, "Please either provide the api-socket option or dbus-service-name and dbus-object-path options")
		return exitError
	}
	c := client.New(inv.socket)
	if inv.cmd.stream {
		return followEvents(ctx, c, prog, stdout, stderr)
	}
	// Like ch-remote, connect before building the request, so a bad
	// socket fails at once instead of after reading stdin.
	conn, err := c.Dial(ctx)
	if err != nil {
		return connectFailed(stderr, prog, err)
	}
	defer conn.Close()
	inv.in.stdin = stdin
	req, err := inv.cmd.build(&inv.in)
	if err != nil {
		printErrorChain(stderr, prog, err)
		return exitError
	}
	resp, err := conn.Do(ctx, req.method, req.endpoint, req.body, req.fds...)
	if err != nil {
		printErrorChain(stderr, prog, &stepError{"http client error", err})
		return exitError
	}
	// api_client prints a body exactly when the reply has a
	// Content-Length (vmm.shutdown's empty 200 prints an empty line).
	if resp.HasBody {
		stdout.Write(resp.Body)
		io.WriteString(stdout, "\n")
	}
	return exitOK
}

// followEvents prints each event as one JSON line until the stream ends
// or ctx is done (Ctrl-C).
func followEvents(ctx context.Context, c *client.Client, prog string, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := c.Events(ctx)
	if err != nil {
		return connectFailed(stderr, prog, err)
	}
	enc := json.NewEncoder(stdout)
	for ev := range ch {
		if err := enc.Encode(ev); err != nil {
			cancel()
			for range ch {
			}
			return exitError
		}
	}
	return exitOK
}

// connectFailed reports a failed call: ch-remote logs a failure to
// connect as one line, and prints anything else as an error chain.
func connectFailed(stderr io.Writer, prog string, err error) int {
	var te *client.TransportError
	if errors.As(err, &te) && te.Msg == client.MsgConnect {
		fmt.Fprintf(stderr, "%s: %v\n", client.MsgConnect, te.Err)
		return exitError
	}
	printErrorChain(stderr, prog, &stepError{"http client error", err})
	return exitError
}

// invocation is a parsed command line.
type invocation struct {
	socket string
	cmd    *command
	in     input
}

// parseArgs parses ch-remote's clap command line: global options, then
// one subcommand with its own options and positional argument. On help,
// version or a usage error it prints and returns (nil, exit code).
func parseArgs(prog string, args []string, stdout, stderr io.Writer) (*invocation, int) {
	if len(args) == 0 {
		io.WriteString(stderr, mainHelp(prog))
		return nil, exitUsage
	}
	inv := &invocation{}
	socketSet := false
	i := 0
	for ; i < len(args) && strings.HasPrefix(args[i], "-"); i++ {
		a := args[i]
		switch {
		case a == "-h" || a == "--help":
			io.WriteString(stdout, mainHelp(prog))
			return nil, exitOK
		case a == "-V" || a == "--version":
			fmt.Fprintf(stdout, "%s %s\n", prog, cli.Version)
			return nil, exitOK
		case (a == "--api-socket" || strings.HasPrefix(a, "--api-socket=")) && socketSet:
			return nil, usageError(stderr, mainUsage(prog), "the argument '--api-socket <api-socket>' cannot be used multiple times")
		case a == "--api-socket":
			if i+1 >= len(args) {
				return nil, usageError(stderr, mainUsage(prog), "a value is required for '--api-socket <api-socket>' but none was supplied")
			}
			i++
			inv.socket, socketSet = args[i], true
		case strings.HasPrefix(a, "--api-socket="):
			inv.socket, socketSet = strings.TrimPrefix(a, "--api-socket="), true
		default:
			return nil, usageError(stderr, mainUsage(prog), fmt.Sprintf("unexpected argument '%s' found", a))
		}
	}
	if i >= len(args) {
		return nil, usageError(stderr, mainUsage(prog), fmt.Sprintf("'%s' requires a subcommand but one was not provided", prog))
	}
	name := args[i]
	if name == "help" {
		if i+1 < len(args) {
			if c := findCommand(args[i+1]); c != nil {
				io.WriteString(stdout, commandHelp(prog, c))
				return nil, exitOK
			}
		}
		io.WriteString(stdout, mainHelp(prog))
		return nil, exitOK
	}
	cmd := findCommand(name)
	if cmd == nil {
		return nil, usageError(stderr, mainUsage(prog), fmt.Sprintf("unrecognized subcommand '%s'", name))
	}
	inv.cmd = cmd
	inv.in.flags = map[string]string{}
	onlyPositional := false
	for i++; i < len(args); i++ {
		a := args[i]
		if !onlyPositional && strings.HasPrefix(a, "-") && a != "-" {
			if a == "--" {
				onlyPositional = true
				continue
			}
			if a == "-h" || a == "--help" {
				io.WriteString(stdout, commandHelp(prog, cmd))
				return nil, exitOK
			}
			fname, val, hasVal := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			spec := cmd.flag(fname)
			if !strings.HasPrefix(a, "--") || spec == nil {
				return nil, usageError(stderr, commandUsage(prog, cmd), fmt.Sprintf("unexpected argument '%s' found", a))
			}
			if !hasVal {
				if i+1 >= len(args) {
					return nil, usageError(stderr, commandUsage(prog, cmd), fmt.Sprintf("a value is required for '--%s <%s>' but none was supplied", fname, fname))
				}
				i++
				val = args[i]
			}
			if _, dup := inv.in.flags[fname]; dup {
				return nil, usageError(stderr, commandUsage(prog, cmd), fmt.Sprintf("the argument '--%s <%s>' cannot be used multiple times", fname, fname))
			}
			inv.in.flags[fname] = val
			continue
		}
		if cmd.arg == "" || inv.in.hasArg {
			return nil, usageError(stderr, commandUsage(prog, cmd), fmt.Sprintf("unexpected argument '%s' found", a))
		}
		inv.in.arg, inv.in.hasArg = a, true
	}
	if cmd.arg != "" && !inv.in.hasArg {
		if cmd.required {
			return nil, usageError(stderr, commandUsage(prog, cmd), fmt.Sprintf("the following required arguments were not provided:\n  <%s>", cmd.arg))
		}
		inv.in.arg, inv.in.hasArg = cmd.argDef, cmd.argDef != ""
	}
	for _, f := range cmd.flags {
		if _, ok := inv.in.flags[f.name]; f.required && !ok {
			return nil, usageError(stderr, commandUsage(prog, cmd), fmt.Sprintf("the following required arguments were not provided:\n  --%s <%s>", f.name, f.name))
		}
	}
	return inv, exitOK
}

func (c *command) flag(name string) *flagSpec {
	for i := range c.flags {
		if c.flags[i].name == name {
			return &c.flags[i]
		}
	}
	return nil
}

// usageError prints a clap-style usage error.
func usageError(stderr io.Writer, usage, msg string) int {
	fmt.Fprintf(stderr, "error: %s\n\nUsage: %s\n\nFor more information, try '--help'.\n", msg, usage)
	return exitUsage
}

func mainUsage(prog string) string { return prog + " [OPTIONS] <COMMAND>" }

func commandUsage(prog string, c *command) string {
	u := prog + " " + c.name
	if len(c.flags) > 0 {
		u += " [OPTIONS]"
	}
	if c.arg != "" {
		if c.required {
			u += " <" + c.arg + ">"
		} else {
			u += " [" + c.arg + "]"
		}
	}
	return u
}

func mainHelp(prog string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Remotely control a Nimbus (Cloud Hypervisor compatible) VMM.\n\nUsage: %s\n\nCommands:\n", mainUsage(prog))
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-24s %s\n", c.name, c.about)
	}
	fmt.Fprintf(&b, "  %-24s %s\n", "help", "Print this message or the help of the given subcommand(s)")
	b.WriteString("\nOptions:\n")
	b.WriteString("      --api-socket <api-socket>  HTTP API socket path (UNIX domain socket).\n")
	b.WriteString("  -h, --help                     Print help\n")
	b.WriteString("  -V, --version                  Print version\n")
	return b.String()
}

func commandHelp(prog string, c *command) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\nUsage: %s\n", c.about, commandUsage(prog, c))
	if c.arg != "" {
		fmt.Fprintf(&b, "\nArguments:\n  <%s>  %s", c.arg, c.argHelp)
		if c.argDef != "" {
			fmt.Fprintf(&b, " [default: %s]", c.argDef)
		}
		b.WriteString("\n")
	}
	b.WriteString("\nOptions:\n")
	for _, f := range c.flags {
		fmt.Fprintf(&b, "      --%s <%s>  %s\n", f.name, f.name, f.help)
	}
	b.WriteString("  -h, --help  Print help\n")
	return b.String()
}
