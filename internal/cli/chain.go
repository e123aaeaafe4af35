package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// DisplayName names the program in the error chain printed when the VMM
// fails. Nimbus prints "Error: Nimbus exited with the following chain of
// errors:" where upstream prints "Cloud Hypervisor"; cmd/nimbus sets it to
// "Cloud Hypervisor" when the binary is installed as cloud-hypervisor, so
// scripts that match upstream's stderr keep working.
var DisplayName = "Nimbus"

// StepError is one level of the chain that the runner adds around a
// failure, e.g. "Error booting VM" around the control loop's error, like
// the variants of upstream's cloud-hypervisor main Error enum.
type StepError struct {
	Msg string
	Err error
}

func (e *StepError) Error() string {
	if e.Err == nil {
		return e.Msg
	}
	return e.Msg + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *StepError) Unwrap() error { return e.Err }

// PrintErrorChain prints err as upstream's cli_print_error_chain
// (cloud-hypervisor/src/lib.rs): a header, then each level of the
// errors.Unwrap chain, outermost first, as "  <level>: <own text>".
func PrintErrorChain(w io.Writer, prog string, err error) {
	levels := ErrorChain(err)
	if len(levels) <= 1 {
		fmt.Fprintf(w, "Error: %s exited with the following error:\n  %v\n", prog, err)
		return
	}
	fmt.Fprintf(w, "Error: %s exited with the following chain of errors:\n", prog)
	for i, l := range levels {
		fmt.Fprintf(w, "  %d: %s\n", i, l)
	}
}

// ErrorChain is err's levels: each wrapper's text without its cause's
// (Go wrappers append ": <cause>"), as internal/api renders error bodies.
func ErrorChain(err error) []string {
	var out []string
	for err != nil {
		msg := err.Error()
		inner := errors.Unwrap(err)
		if inner != nil {
			if own, ok := strings.CutSuffix(msg, inner.Error()); ok {
				own = strings.TrimSuffix(strings.TrimSuffix(own, " "), ":")
				if own != "" {
					out = append(out, own)
				}
			} else {
				// The wrapper does not end with its cause's text: its own
				// text is all that can be reported for this level.
				out = append(out, msg)
			}
		} else {
			out = append(out, msg)
		}
		err = inner
	}
	return out
}
