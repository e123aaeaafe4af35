// Package seccomp confines the VMM's threads with seccomp-BPF allow-lists,
// as upstream Cloud Hypervisor does (--seccomp true|false|log|errno).
//
// Upstream gives each thread kind (API, VMM, vCPU, each device worker,
// signal handler) its own filter. Go multiplexes goroutines over threads,
// so a filter can only follow the code that runs on a thread when that
// code owns the thread (runtime.LockOSThread). Nimbus therefore installs:
//   - a process filter on every thread (SECCOMP_FILTER_FLAG_TSYNC), before
//     the API serves and before any guest runs: the union of what the
//     API, the control loop, the device workers and the Go runtime call;
//   - a stricter filter on each vCPU thread, which is locked for life and
//     ends with its goroutine: the runtime, KVM ioctls and the fd I/O of
//     the device models that vCPU exits run. It cannot open files, make
//     sockets, start threads or processes.
//
// A locked thread never starts threads (the runtime hands thread creation
// to its template thread), so the vCPU filter reaches no other thread.
//
// The syscall numbers come from github.com/elastic/go-seccomp-bpf, which
// also assembles the BPF program (and refuses the x32 ABI); loading is
// done here so that the errno action can return EPERM as upstream's does.
package seccomp
