package seccomp

// runtimeSyscalls are what the Go runtime itself calls on any thread: the
// scheduler and its timers, the garbage collector, signals (preemption,
// crash reports) and thread exit.
var runtimeSyscalls = []string{
	"brk", "clock_gettime", "clock_nanosleep", "exit", "exit_group", "futex",
	"getpid", "getrandom", "gettid", "gettimeofday", "madvise", "mmap",
	"mprotect", "munmap", "nanosleep", "restart_syscall", "rt_sigaction",
	"rt_sigprocmask", "rt_sigreturn", "sched_getaffinity", "sched_yield",
	// starting the world after a GC polls the network, on whichever
	// thread started the GC (a vCPU thread seen doing it)
	"epoll_pwait", "epoll_wait",
	"sigaltstack", "tgkill", "tkill",
}

// vcpuSyscalls are what a vCPU thread calls beyond the runtime: KVM's
// ioctls (KVM_RUN, vCPU state, irq lines and MSI routes the device models
// program on guest writes) and I/O on descriptors that exist already:
// eventfds signalling device workers, the serial and console outputs,
// closing what a device reset drops, and the vhost-user messages (with
// fds) that activating a device sends when the guest sets DRIVER_OK.
var vcpuSyscalls = []string{
	"close", "dup", "epoll_ctl", "eventfd2", "fcntl", "ioctl", "lseek",
	"pread64", "preadv", "pwrite64", "pwritev", "read", "readv", "recvmsg",
	"sendmsg", "write", "writev",
}

// processSyscalls are what the rest of the VMM calls, on any thread: the
// API server and its SCM_RIGHTS descriptors, the control loop building
// machines (KVM, guest memory, memfds, taps, ptys), the device workers'
// disk and network I/O, snapshots and migration (files, sockets,
// SEEK_DATA, pagemap), and the Go runtime's thread creation (clone, and
// clone3 when libc starts threads in a cgo build). Not listed, among
// others: execve, fork, ptrace, process_vm_*, mount, module and kexec
// calls, bpf, perf_event_open, setuid and friends, keyctl, reboot.
var processSyscalls = []string{
	// threads and process
	"arch_prctl", "clone", "clone3", "getegid", "geteuid", "getgid",
	"getuid", "membarrier", "prctl", "prlimit64", "rseq", "set_robust_list",
	"set_tid_address", "uname",
	// vCPU threads add their filter; a filter only ever narrows
	"seccomp",
	// Landlock, applied to every thread at vm.create (--landlock)
	"landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self",
	// polling
	"epoll_create1", "pipe2", "poll", "ppoll",
	// files
	"access", "copy_file_range", "dup3", "faccessat", "faccessat2",
	"fadvise64", "fallocate", "fchmod", "fchmodat", "fdatasync", "flock",
	"fstat", "fstatfs", "fsync", "ftruncate", "getcwd", "getdents64",
	"memfd_create", "mincore", "mkdirat", "newfstatat", "openat",
	"preadv2", "pwritev2", "readlinkat", "renameat", "sendfile", "splice",
	"statfs", "statx", "umask", "unlinkat",
	// sockets
	"accept4", "bind", "connect", "getpeername", "getsockname",
	"getsockopt", "listen", "recvfrom", "sendto",
	"setsockopt", "shutdown", "socket", "socketpair",
}

// vcpuList is the vCPU threads' allow-list.
func vcpuList() []string { return join(runtimeSyscalls, vcpuSyscalls) }

// processList is the process-wide allow-list.
func processList() []string { return join(runtimeSyscalls, vcpuSyscalls, processSyscalls) }

func join(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}
