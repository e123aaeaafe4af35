// Package landlock confines the VMM's file system access to the paths its
// VM config names (--landlock, landlock_enable), as upstream's
// VmConfig::apply_landlock (vmm/src/vm_config.rs): applied at vm.create,
// restore and an incoming migration, to every thread, for the rest of the
// process's life. Paths hot-added later must be named in landlock_rules.
//
// Upstream requires Landlock ABI 3 (Linux 6.2); Nimbus asks for ABI 3 and
// takes what the kernel has (ABI 1 lacks rename/link across directories,
// ABI 2 lacks truncate control) but refuses a kernel without Landlock.
package landlock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/landlock-lsm/go-landlock/landlock"
	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"

	"github.com/nimbus-vmm/nimbus/internal/config"
)

// ErrUnavailable is returned when the kernel has no Landlock.
var ErrUnavailable = errors.New("Landlock is not supported by the kernel")

// Upstream's access letters at ABI 3 (landlock crate AccessFs::from_read
// and from_write).
const (
	read  = ll.AccessFSExecute | ll.AccessFSReadFile | ll.AccessFSReadDir
	write = ll.AccessFSWriteFile | ll.AccessFSRemoveDir | ll.AccessFSRemoveFile | ll.AccessFSMakeChar |
		ll.AccessFSMakeDir | ll.AccessFSMakeReg | ll.AccessFSMakeSock | ll.AccessFSMakeFifo |
		ll.AccessFSMakeBlock | ll.AccessFSMakeSym | ll.AccessFSRefer | ll.AccessFSTruncate
	// onFile are the rights a rule on a non-directory may carry.
	onFile = ll.AccessFSExecute | ll.AccessFSWriteFile | ll.AccessFSReadFile | ll.AccessFSTruncate
)

// Rule is one path and its access, "r", "w" or "rw".
type Rule struct {
	Path, Access string
	// Optional rules are skipped when the path does not exist yet.
	Optional bool
}

// Rules are the rules cfg implies, in upstream's order, then Nimbus's
// own needs, then cfg.LandlockRules.
func Rules(cfg *config.VmConfig) []Rule {
	var rs []Rule
	add := func(path, access string) {
		if path != "" {
			rs = append(rs, Rule{Path: path, Access: access})
		}
	}
	for _, z := range cfg.Memory.Zones {
		add(z.File, "rw")
	}
	for _, d := range cfg.Disks {
		add(d.Path, "rw")
		add(d.VhostSocket, "rw") // not in upstream's list; the socket is opened at boot
	}
	add(cfg.Rng.Src, "r")
	for _, f := range cfg.Fs {
		add(f.Socket, "rw")
	}
	for _, g := range cfg.GenericVhostUser {
		add(g.Socket, "rw")
	}
	for _, p := range cfg.Pmem {
		if p.DiscardWrites {
			add(p.File, "r")
		} else {
			add(p.File, "rw")
		}
	}
	console := func(mode config.ConsoleOutputMode, file, socket string) {
		if mode == config.ConsolePty {
			add("/dev/pts", "rw")
			add("/dev/ptmx", "rw")
		}
		add(file, "rw")
		add(socket, "rw")
	}
	console(cfg.Console.Mode, cfg.Console.File, cfg.Console.Socket)
	console(cfg.Serial.Mode, cfg.Serial.File, cfg.Serial.Socket)
	console(cfg.DebugConsole.Mode, cfg.DebugConsole.File, "")
	if v := cfg.Vsock; v != nil {
		add(filepath.Dir(v.Socket), "w") // the VMM makes the socket at boot
		rs = append(rs, Rule{Path: v.Socket, Access: "rw", Optional: true})
	}
	if p := cfg.Payload; p != nil {
		add(p.Firmware, "r")
		add(p.Kernel, "r")
		add(p.Initramfs, "r")
	}
	if len(cfg.Net) > 0 {
		add("/dev/net/tun", "rw")
	}
	for _, n := range cfg.Net {
		add(n.VhostSocket, "rw")
	}
	// Nimbus opens /dev/kvm for each machine (at boot and reboot), where
	// upstream opens it once at start; a snapshot or migration reads the
	// page map to skip RAM the guest never touched.
	add("/dev/kvm", "rw")
	add("/proc/self/pagemap", "r")
	for _, r := range cfg.LandlockRules {
		add(r.Path, r.Access)
	}
	return rs
}

// access turns "r", "w", "rw" into rights.
func access(s string) (landlock.AccessFSSet, error) {
	if s == "" {
		return 0, errors.New("Invalid Landlock access: Access cannot be empty")
	}
	var a landlock.AccessFSSet
	for _, c := range s {
		switch c {
		case 'r':
			a |= read
		case 'w':
			a |= write
		default:
			return 0, fmt.Errorf("Invalid Landlock access: Invalid access: %c", c)
		}
	}
	return a, nil
}

// Apply restricts every thread of the process to Rules(cfg). It returns
// the Landlock ABI the kernel enforces.
func Apply(cfg *config.VmConfig) (abi int, err error) {
	abi, err = ll.LandlockGetABIVersion()
	if err != nil || abi < 1 {
		return 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	var rules []landlock.Rule
	for _, r := range Rules(cfg) {
		a, err := access(r.Access)
		if err != nil {
			return abi, err
		}
		fi, err := os.Stat(r.Path)
		switch {
		case err != nil && r.Optional && errors.Is(err, os.ErrNotExist):
			continue
		case err != nil:
			return abi, fmt.Errorf("Error opening path: %w", err)
		case !fi.IsDir():
			a &= onFile // directory rights on a file are refused (EINVAL)
		}
		rules = append(rules, landlock.PathAccess(a, r.Path))
	}
	if err := landlock.V3.BestEffort().RestrictPaths(rules...); err != nil {
		return abi, fmt.Errorf("Error creating/adding/restricting ruleset: %w", err)
	}
	return abi, nil
}
