// Package kvm is a pure-Go (no cgo) binding of the Linux KVM API for x86-64,
// built on golang.org/x/sys/unix.
//
// It has three handle types, one per kind of KVM file descriptor:
// System (/dev/kvm), VM (KVM_CREATE_VM) and Vcpu (KVM_CREATE_VCPU). Each
// method is one ioctl; failures wrap ErrIoctl and the errno and name the
// ioctl (see IoctlError).
//
// Binary layouts mirror the kernel headers: ioctl.go and abi.go follow
// <linux/kvm.h>, abi_x86.go follows arch/x86/include/uapi/asm/kvm.h, and
// run.go the struct kvm_run. Only *_unsafe.go files use package unsafe.
//
// # Running and kicking a vCPU
//
// Vcpu.Run issues KVM_RUN and returns the decoded exit. It must be called
// from a goroutine locked to its OS thread (runtime.LockOSThread), because
// Kick interrupts the vCPU by sending a signal to that thread.
//
// Vcpu.Kick, callable from any goroutine, forces a running or about-to-run
// vCPU back to user space:
//
//  1. it sets kvm_run.immediate_exit, so a KVM_RUN that has not entered the
//     guest yet returns EINTR at once (this closes the race between checking
//     a pause flag and calling KVM_RUN);
//  2. it sends KickSignal with tgkill to the thread last seen in Run, so a
//     vCPU already executing guest code exits with EINTR.
//
// Run treats EINTR with immediate_exit set as a kick: it clears the flag and
// returns an Exit with Reason ExitIntr. EINTR without the flag (a Go runtime
// signal such as SIGURG preemption) and EAGAIN are retried. A kick therefore
// is never lost: if it lands while the vCPU is in user space handling an
// exit, the next Run returns ExitIntr immediately.
//
// Vcpu.Close may be called while another goroutine is in Run: it marks
// the vCPU closing, kicks it, and waits (a read/write lock held by Run)
// until Run has left before unmapping kvm_run, so a racing owner cannot
// touch freed memory. Later Runs fail with ErrClosed.
//
// KickSignal is a real-time signal that the Go runtime neither uses nor
// needs: unless a program calls signal.Notify for it, the runtime's handler
// swallows it. It must not be ignored (signal.Ignore) or blocked in vCPU
// threads, since the kernel discards ignored signals without interrupting
// KVM_RUN.
package kvm
