package kvm

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Sentinel error categories. Every error this package returns wraps one
// of them.
var (
	// ErrUnavailable: /dev/kvm is missing or cannot be opened.
	ErrUnavailable = errors.New("kvm: /dev/kvm unavailable")
	// ErrAPIVersion: KVM_GET_API_VERSION did not return APIVersion.
	ErrAPIVersion = errors.New("kvm: unsupported KVM API version")
	// ErrMissingCap: a required KVM capability is absent.
	ErrMissingCap = errors.New("kvm: required capability missing")
	// ErrIoctl: an ioctl failed; the error also wraps the unix.Errno.
	ErrIoctl = errors.New("kvm: ioctl failed")
	// ErrClosed: the vCPU (or VM) was closed.
	ErrClosed = errors.New("kvm: closed")
	// ErrInvalidArgument: the caller passed a value the API cannot take.
	ErrInvalidArgument = errors.New("kvm: invalid argument")
)

// IoctlError reports a failed ioctl by name. It matches both ErrIoctl and
// its Errno with errors.Is.
type IoctlError struct {
	Op    string // ioctl name, e.g. "KVM_CREATE_VM"
	Errno unix.Errno
}

func (e *IoctlError) Error() string { return fmt.Sprintf("%s: %v", e.Op, e.Errno) }

// Unwrap exposes the category and the errno.
func (e *IoctlError) Unwrap() []error { return []error{ErrIoctl, e.Errno} }

func ioctlErr(op string, errno unix.Errno) error {
	return &IoctlError{Op: op, Errno: errno}
}

// MissingCapError names the first capability RequireCaps found missing.
type MissingCapError struct {
	Cap Cap
}

func (e *MissingCapError) Error() string {
	return fmt.Sprintf("%v: %v", ErrMissingCap, e.Cap)
}

// Unwrap returns ErrMissingCap.
func (e *MissingCapError) Unwrap() error { return ErrMissingCap }
