package guestimage

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// Console markers printed by the guest init (one per line).
const (
	// MarkerUp is followed by "<uname -r> cpus=<n> mem=<MemTotal kB>".
	MarkerUp = "NIMBUS-GUEST-UP"
	// MarkerResult is followed by "<name> <exit status>" after each command.
	MarkerResult = "NIMBUS-GUEST-RESULT"
	// MarkerError is followed by a description of a failed init step.
	MarkerError = "NIMBUS-GUEST-ERROR"
	// MarkerPoweroff is printed just before init powers the guest off.
	MarkerPoweroff = "NIMBUS-GUEST-POWEROFF"
	// MarkerStayUp is printed instead when the guest stays up.
	MarkerStayUp = "NIMBUS-GUEST-STAYING-UP"
)

// Kernel command-line parameters the guest init understands. The kernel
// limits the whole command line to 2048 bytes on x86.
const (
	// ParamRun carries a base64 shell script; it may be given several times.
	ParamRun = "nimbus.run"
	// ParamStay=1 keeps the guest up after its commands (lifecycle tests).
	ParamStay = "nimbus.stay"
)

// DefaultModules are the guest drivers every end-to-end test image loads.
var DefaultModules = []string{
	"virtio_pci", "virtio_mmio", "virtio_blk", "virtio_net", "virtio_console", "virtio_rng",
	"vmw_vsock_virtio_transport",
	"virtio_mem",     // hotplug_method=virtio-mem
	"virtio_balloon", // --balloon
	// The ACPI power button (vm.power-button) reaches userspace as a key
	// event through these.
	"button", "evdev",
}

// OptionalModules are guest drivers the sandbox exports beside
// DefaultModules for the tests that add them to their images.
var OptionalModules = []string{
	"virtio_pmem", "nd_pmem", "ext4", "crc32c_generic", // --pmem, mounted with DAX (ext4 asks for crc32c)
	"virtiofs", // --fs
}

// File is a host file (or directory tree) copied into an image.
type File struct {
	Host  string
	Guest string
}

// Options describe a test guest image.
type Options struct {
	Busybox     string       // host path of a static busybox (required)
	Modules     *ModuleIndex // where module names resolve; nil with no Modules
	ModuleNames []string     // modules to load at boot, dependencies added
	Script      string       // shell script run after boot, before command-line scripts
	Files       []File       // extra files
	StayUp      bool         // keep running after the commands instead of powering off
	Compression Compression
}

// RunParam returns the kernel command-line parameter that makes the guest
// run script.
func RunParam(script string) string {
	return ParamRun + "=" + base64.StdEncoding.EncodeToString([]byte(script))
}

// Build assembles a guest initramfs: busybox, the modules, the files, the
// embedded script at /nimbus/run.sh and /init (see InitScript).
func Build(opts Options) ([]byte, error) {
	b, err := NewGuestBuilder(opts)
	if err != nil {
		return nil, err
	}
	return b.Bytes(opts.Compression)
}

// NewGuestBuilder is Build without the final encoding, for callers that
// stream the archive or add members.
func NewGuestBuilder(opts Options) (*Builder, error) {
	if opts.Busybox == "" {
		return nil, fmt.Errorf("%w: no busybox given (install Debian package busybox-static)", ErrImage)
	}
	b := NewBuilder()
	if err := b.AddBusybox(opts.Busybox); err != nil {
		return nil, err
	}
	var mods []string
	if len(opts.ModuleNames) > 0 {
		if opts.Modules == nil {
			return nil, fmt.Errorf("%w: modules requested without a module index", ErrImage)
		}
		var err error
		if mods, err = b.AddModules(opts.Modules, opts.ModuleNames...); err != nil {
			return nil, err
		}
	}
	for _, f := range opts.Files {
		if err := b.AddHostFile(f.Host, f.Guest); err != nil {
			return nil, err
		}
	}
	if opts.Script != "" {
		if err := b.AddFile("/nimbus/run.sh", []byte(opts.Script), 0o755); err != nil {
			return nil, err
		}
	}
	if err := b.AddFile("/init", []byte(InitScript(mods, opts.StayUp)), 0o755); err != nil {
		return nil, err
	}
	return b, nil
}

// InitScript returns the guest's /init: mount the pseudo file systems, load
// the modules (paths in load order), print MarkerUp, run /nimbus/run.sh and
// each nimbus.run= script from the command line, printing MarkerResult after
// each, then power off, or stay up if stayUp or nimbus.stay=1.
func InitScript(modules []string, stayUp bool) string {
	var s strings.Builder
	s.WriteString(`#!/bin/sh
# Nimbus test guest init (internal/guestimage).
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
`)
	for _, m := range modules {
		fmt.Fprintf(&s, "insmod %s || echo \"%s insmod %s failed\"\n", m, MarkerError, m)
	}
	stay := "0"
	if stayUp {
		stay = "1"
	}
	fmt.Fprintf(&s, `echo "%s $(uname -r) cpus=$(nproc) mem=$(awk '/^MemTotal:/{print $2}' /proc/meminfo)"
stay=%s
if [ -f /nimbus/run.sh ]; then
	sh /nimbus/run.sh
	echo "%s embedded $?"
fi
n=0
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	%s=*)
		n=$((n+1))
		echo "${arg#%s=}" | base64 -d > /tmp/run$n.sh || echo "%s bad %s script $n"
		sh /tmp/run$n.sh
		echo "%s cmdline$n $?"
		;;
	%s=1) stay=1 ;;
	esac
done
if [ "$stay" = 1 ]; then
	echo %s
	while :; do sleep 3600; done
fi
echo %s
sync
poweroff -f
`, MarkerUp, stay, MarkerResult, ParamRun, ParamRun, MarkerError, ParamRun, MarkerResult, ParamStay, MarkerStayUp, MarkerPoweroff)
	return s.String()
}

// Result is one command's outcome as printed by the guest.
type Result struct {
	Name   string // "embedded" or "cmdline<N>"
	Status int
	Output string // lines printed between the previous marker and this one
}

// Console is what ParseConsole found in a guest's console output.
type Console struct {
	Up      bool
	Kernel  string // uname -r
	CPUs    int
	MemKB   int
	Results []Result
	Errors  []string
	// Warnings are the guest kernel's WARN/BUG reports: the line after
	// each "cut here" line, without its timestamp.
	Warnings []string
	Poweroff bool
}

// ParseConsole reads the markers out of a guest's console output. Carriage
// returns (serial consoles send CRLF) are ignored.
func ParseConsole(out string) Console {
	var c Console
	var pending []string
	cut := false
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if cut {
			if _, msg, ok := strings.Cut(line, "] "); ok && strings.HasPrefix(line, "[") {
				line = msg
			}
			c.Warnings = append(c.Warnings, line)
			cut = false
			continue
		}
		switch {
		case strings.Contains(line, "------------[ cut here ]------------"):
			cut = true
		case strings.HasPrefix(line, MarkerUp+" "):
			c.Up = true
			pending = nil
			for i, f := range strings.Fields(strings.TrimPrefix(line, MarkerUp+" ")) {
				k, v, _ := strings.Cut(f, "=")
				switch {
				case i == 0:
					c.Kernel = f
				case k == "cpus":
					c.CPUs, _ = strconv.Atoi(v)
				case k == "mem":
					c.MemKB, _ = strconv.Atoi(v)
				}
			}
		case strings.HasPrefix(line, MarkerResult+" "):
			f := strings.Fields(strings.TrimPrefix(line, MarkerResult+" "))
			if len(f) != 2 {
				continue
			}
			st, err := strconv.Atoi(f[1])
			if err != nil {
				continue
			}
			c.Results = append(c.Results, Result{Name: f[0], Status: st, Output: strings.Join(pending, "\n")})
			pending = nil
		case strings.HasPrefix(line, MarkerError+" "):
			c.Errors = append(c.Errors, strings.TrimPrefix(line, MarkerError+" "))
		case line == MarkerPoweroff:
			c.Poweroff = true
		default:
			if c.Up {
				pending = append(pending, line)
			}
		}
	}
	return c
}
