package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/nimbus-vmm/nimbus/pkg/client"
)

// printErrorChain prints err as upstream's cli_print_error_chain does
// (cloud-hypervisor/src/lib.rs), with ch-remote's special rendering of a
// server reply (server_api_error_display_modifier in ch-remote.rs):
//
//	Error: ch-remote exited with the following chain of errors:
//	  0: http client error
//	  1: Server responded with NotFound
//	  2: Error from API
//	  3: The VM info is not available
//	  4: VM is not created
func printErrorChain(w io.Writer, prog string, err error) {
	fmt.Fprintf(w, "Error: %s exited with the following ", prog)
	if unwrapOne(err) == nil {
		fmt.Fprintf(w, "error:\n  %v\n", err)
		return
	}
	io.WriteString(w, "chain of errors:\n")
	for level := 0; err != nil; level++ {
		if ae, ok := err.(*client.APIError); ok {
			printServerResponse(w, level, ae)
			return
		}
		next := unwrapOne(err)
		fmt.Fprintf(w, "  %d: %s\n", level, ownText(err, next))
		err = next
	}
}

// printServerResponse renders a server's error reply: the status, then
// each message of the JSON error array, numbered on from level.
func printServerResponse(w io.Writer, level int, e *client.APIError) {
	if e.Messages == nil {
		fmt.Fprintf(w, "  X: Can't get remote's error messages from JSON response: %v: body='%s'\n", e.DecodeErr, e.Body)
		return
	}
	fmt.Fprintf(w, "  %d: Server responded with %s\n", level, e.Status())
	for i, m := range e.Messages {
		fmt.Fprintf(w, "  %d: %s\n", level+1+i, m)
	}
}

// unwrapOne returns err's cause, the chain's next level. For errors that wrap several (a
// category sentinel plus the cause, as config.ParseError does) it picks
// the one whose text ends err's own text: that is the chain's next level.
func unwrapOne(err error) error {
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		// A cause whose text err does not end with is a category (e.g.
		// optparse's ErrUnknownOption), not a level of the chain.
		if next := u.Unwrap(); next != nil && strings.HasSuffix(err.Error(), next.Error()) {
			return next
		}
	case interface{ Unwrap() []error }:
		msg := err.Error()
		errs := u.Unwrap()
		for i := len(errs) - 1; i >= 0; i-- {
			if errs[i] != nil && strings.HasSuffix(msg, errs[i].Error()) && msg != errs[i].Error() {
				return errs[i]
			}
		}
	}
	return nil
}

// ownText is err's message without the text of its cause, which Go
// errors conventionally append after ": ".
func ownText(err, next error) string {
	msg := err.Error()
	if next == nil {
		return msg
	}
	if s, ok := strings.CutSuffix(msg, next.Error()); ok {
		s = strings.TrimSuffix(strings.TrimSuffix(s, " "), ":")
		if s != "" {
			return s
		}
	}
	return msg
}
