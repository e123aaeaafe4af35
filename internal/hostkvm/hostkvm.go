// Package hostkvm says what this host's /dev/kvm is: hardware KVM, on which
// a stock Linux guest boots; a software KVM such as PVM (module kvm_pvm),
// whose ioctls answer but which runs only guests built for it; or none.
//
// The sandbox (internal/sandbox) runs commands on the host only for
// hardware KVM, and tests gate on the same answer: KVM-ioctl tests may run
// on any working /dev/kvm, guest boots only on hardware KVM.
package hostkvm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/nimbus-vmm/nimbus/internal/kvm"
)

// Kind is a class of host KVM.
type Kind int

const (
	// None: /dev/kvm is missing or cannot be opened.
	None Kind = iota
	// Software: /dev/kvm works but is not hardware-assisted (PVM, or a
	// vendor module without svm/vmx, or one that failed the probe): stock
	// guests never boot on it.
	Software
	// Hardware: kvm_intel or kvm_amd on a CPU with vmx or svm, and a
	// stock-guest-style vCPU passed the probe.
	Hardware
)

func (k Kind) String() string {
	switch k {
	case Hardware:
		return "hardware"
	case Software:
		return "software"
	default:
		return "none"
	}
}

// Report is the classification and why.
type Report struct {
	Kind Kind
	// Reason completes "/dev/kvm is …", e.g. "kvm_pvm (no svm/vmx)".
	Reason string
}

// String reads as a sentence fragment for logs: "/dev/kvm is kvm_amd (svm)".
func (r Report) String() string {
	if r.Kind == None {
		return "no usable /dev/kvm (" + r.Reason + ")"
	}
	return "/dev/kvm is " + r.Reason
}

// BootsStockGuests reports whether a stock Linux guest can boot here.
func (r Report) BootsStockGuests() bool { return r.Kind == Hardware }

// Facts are what Classify decides from, gathered by Host from the live
// system or made up by tests.
type Facts struct {
	// OpenErr is the error opening /dev/kvm (nil: it opened).
	OpenErr error
	// CPUFlags are the "flags" of /proc/cpuinfo's first processor.
	CPUFlags []string
	// Modules are the loaded KVM modules: the kvm* names in /proc/modules
	// and /sys/module (built-in modules with parameters appear only there).
	Modules []string
	// Probe runs a stock-guest-style vCPU (see ProbeStockGuest); nil skips it.
	Probe func() error
}

// vendor pairs a hardware KVM module with the CPU flag it needs.
var vendors = []struct{ module, flag string }{{"kvm_intel", "vmx"}, {"kvm_amd", "svm"}}

// Classify decides the kind from f. The probe runs only when the modules
// and CPU flags already say hardware.
func Classify(f Facts) Report {
	if f.OpenErr != nil {
		return Report{Kind: None, Reason: f.OpenErr.Error()}
	}
	var flags []string
	for _, v := range vendors {
		if slices.Contains(f.CPUFlags, v.flag) {
			flags = append(flags, v.flag)
		}
	}
	flagText := "no svm/vmx"
	if len(flags) > 0 {
		flagText = strings.Join(flags, "/")
	}
	for _, v := range vendors {
		if !slices.Contains(f.Modules, v.module) || !slices.Contains(f.CPUFlags, v.flag) {
			continue
		}
		if f.Probe != nil {
			if err := f.Probe(); err != nil {
				return Report{Kind: Software, Reason: fmt.Sprintf("%s (%s), but a stock-guest-style vCPU failed: %v", v.module, v.flag, err)}
			}
		}
		return Report{Kind: Hardware, Reason: fmt.Sprintf("%s (%s)", v.module, v.flag)}
	}
	var others []string
	for _, m := range f.Modules {
		if m != "kvm" {
			others = append(others, m)
		}
	}
	if len(others) == 0 {
		return Report{Kind: Software, Reason: fmt.Sprintf("not kvm_intel or kvm_amd (%s)", flagText)}
	}
	return Report{Kind: Software, Reason: fmt.Sprintf("%s (%s)", strings.Join(others, ", "), flagText)}
}

var host = sync.OnceValue(func() Report { return Classify(Gather("/")) })

// Host classifies this machine once per process (the probe creates a VM).
func Host() Report { return host() }

// Gather reads the facts of the system whose /proc and /sys are under root
// ("/" for the live system; tests pass a fake tree). The probe is set only
// for the live system.
func Gather(root string) Facts {
	f := Facts{}
	if root == "/" {
		if sys, err := kvm.Open(); err != nil {
			f.OpenErr = err
		} else {
			sys.Close()
			f.Probe = ProbeStockGuest
		}
	}
	if b, err := os.ReadFile(filepath.Join(root, "proc/cpuinfo")); err == nil {
		f.CPUFlags = cpuFlags(b)
	}
	f.Modules = kvmModules(root)
	return f
}

// cpuFlags returns the first processor's flags in a /proc/cpuinfo.
func cpuFlags(cpuinfo []byte) []string {
	sc := bufio.NewScanner(bytes.NewReader(cpuinfo))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "flags" {
			return strings.Fields(v)
		}
	}
	return nil
}

// kvmModules lists the loaded modules named kvm or kvm_*, sorted.
func kvmModules(root string) []string {
	var mods []string
	add := func(name string) {
		name = strings.ReplaceAll(name, "-", "_")
		if (name == "kvm" || strings.HasPrefix(name, "kvm_")) && !slices.Contains(mods, name) {
			mods = append(mods, name)
		}
	}
	if b, err := os.ReadFile(filepath.Join(root, "proc/modules")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 0 {
				add(f[0])
			}
		}
	}
	if ents, err := os.ReadDir(filepath.Join(root, "sys/module")); err == nil {
		for _, e := range ents {
			add(e.Name())
		}
	}
	slices.Sort(mods)
	return mods
}

// ErrProbe: the stock-guest probe's vCPU did not behave as hardware KVM does.
var ErrProbe = errors.New("hostkvm: probe failed")
