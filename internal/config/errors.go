package config

import (
	"errors"
	"fmt"
)

// Validation error categories. internal/api maps ErrDuplicate to 409 and
// ErrInvalid to 400 (upstream: ConfigValidation(IdentifierNotUnique |
// DuplicateDevicePath) -> 409, any other ConfigValidation -> 400).
var (
	// ErrInvalid classifies every validation failure that is not a duplicate.
	ErrInvalid = errors.New("invalid configuration")
	// ErrDuplicate classifies duplicate device identifiers and device paths.
	ErrDuplicate = errors.New("duplicate identifier or path")
)

// ValidationError says which field failed validation and why. Its text is
// the message alone (it is the last entry of the API's error chain); it
// matches ErrInvalid or ErrDuplicate with errors.Is.
type ValidationError struct {
	Field     string // JSON path of the offending field, e.g. "cpus.max_vcpus"
	Msg       string // upstream-style message
	Duplicate bool   // true for duplicate id/path (409 class)
}

func (e *ValidationError) Error() string { return e.Msg }

// Is classifies the error as ErrDuplicate or ErrInvalid.
func (e *ValidationError) Is(target error) bool {
	if e.Duplicate {
		return target == ErrDuplicate
	}
	return target == ErrInvalid
}

func invalidf(field, format string, args ...any) error {
	return &ValidationError{Field: field, Msg: fmt.Sprintf(format, args...)}
}
