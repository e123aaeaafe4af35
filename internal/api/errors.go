package api

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// StatusFor is the one place that maps an error returned by the control
// loop to an HTTP status, following upstream's api_error_status_code
// (vmm/src/api/http/mod.rs) and the categories in internal/vmm/errors.go.
func StatusFor(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, vmm.ErrNotCreated),
		errors.Is(err, vmm.ErrMissingConfig),
		errors.Is(err, vmm.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, vmm.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, vmm.ErrBadConfig):
		return http.StatusBadRequest
	case errors.Is(err, vmm.ErrBusy):
		return http.StatusTooManyRequests
	default:
		return http.StatusInternalServerError
	}
}

// errorChain renders err as upstream's error body entries: the text of
// each level of the errors.Unwrap chain, outermost first, each without the
// text of the levels below it (upstream prints each source's Display).
func errorChain(err error) []string {
	var out []string
	for err != nil {
		msg := err.Error()
		inner := errors.Unwrap(err)
		if inner != nil {
			own, ok := strings.CutSuffix(msg, inner.Error())
			if ok {
				own = strings.TrimSuffix(own, ": ")
				own = strings.TrimSuffix(own, ":")
			} else {
				// The wrapper does not end with its cause's text, so its
				// text is all we can honestly report for this level.
				own = msg
			}
			if own != "" {
				out = append(out, own)
			}
		} else {
			out = append(out, msg)
		}
		err = inner
	}
	return out
}

// apiErrorBody is the body of a failed control-loop command:
// ["Error from API", <ApiError text>, <cause chain>...]. apiText is
// upstream's ApiError Display for the route; it is added unless the
// handler's error already starts with it.
func apiErrorBody(apiText string, err error) []string {
	chain := errorChain(err)
	body := make([]string, 0, len(chain)+2)
	body = append(body, "Error from API")
	if apiText != "" && (len(chain) == 0 || chain[0] != apiText) {
		body = append(body, apiText)
	}
	return append(body, chain...)
}

// isContextErr reports whether the handler gave up waiting because the
// request's context ended (client gone or server closing).
func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
