package hostkvm

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// fakeHost writes a /proc/cpuinfo with flags and the given /proc/modules
// lines and /sys/module entries under a temporary root.
func fakeHost(t *testing.T, flags string, procModules string, sysModules ...string) string {
	t.Helper()
	root := t.TempDir()
	cpuinfo := "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: " + flags + "\n\nprocessor\t: 1\nflags\t\t: fpu\n"
	write := func(p, s string) {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("proc/cpuinfo", cpuinfo)
	if procModules != "" {
		write("proc/modules", procModules)
	}
	for _, m := range sysModules {
		if err := os.MkdirAll(filepath.Join(root, "sys/module", m, "parameters"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestClassify(t *testing.T) {
	probeErr := errors.New("exit KVM_EXIT_MMIO")
	for _, tc := range []struct {
		name       string
		root       func(t *testing.T) string
		openErr    error
		probe      error
		wantKind   Kind
		wantReason string
		wantProbed bool
	}{
		{
			// This workplace's machines: built-in kvm_pvm, no /proc/modules.
			name:       "pvm",
			root:       func(t *testing.T) string { return fakeHost(t, "fpu vme sse2 hypervisor", "", "kvm", "kvm_pvm", "tun") },
			wantKind:   Software,
			wantReason: "kvm_pvm (no svm/vmx)",
		},
		{
			name: "amd",
			root: func(t *testing.T) string {
				return fakeHost(t, "fpu svm sse2", "kvm_amd 155648 0 - Live 0x0\nkvm 1142784 1 kvm_amd, Live 0x0\nccp 118784 1 kvm_amd, Live 0x0\n")
			},
			wantKind: Hardware, wantReason: "kvm_amd (svm)", wantProbed: true,
		},
		{
			name:     "intel",
			root:     func(t *testing.T) string { return fakeHost(t, "fpu vmx ept", "kvm-intel 1 0 - Live 0x0\n", "kvm") },
			wantKind: Hardware, wantReason: "kvm_intel (vmx)", wantProbed: true,
		},
		{
			name:     "intel module, probe fails",
			root:     func(t *testing.T) string { return fakeHost(t, "vmx", "", "kvm", "kvm_intel") },
			probe:    probeErr,
			wantKind: Software, wantReason: "kvm_intel (vmx), but a stock-guest-style vCPU failed: exit KVM_EXIT_MMIO", wantProbed: true,
		},
		{
			// A vendor module without its CPU flag is not hardware KVM.
			name:       "amd module, no svm",
			root:       func(t *testing.T) string { return fakeHost(t, "fpu", "", "kvm", "kvm_amd") },
			wantKind:   Software,
			wantReason: "kvm_amd (no svm/vmx)",
		},
		{
			// PVM beside a hardware module: the hardware one decides.
			name:     "pvm and amd",
			root:     func(t *testing.T) string { return fakeHost(t, "svm", "", "kvm", "kvm_amd", "kvm_pvm") },
			wantKind: Hardware, wantReason: "kvm_amd (svm)", wantProbed: true,
		},
		{
			name:       "unknown module",
			root:       func(t *testing.T) string { return fakeHost(t, "fpu", "", "kvm") },
			wantKind:   Software,
			wantReason: "not kvm_intel or kvm_amd (no svm/vmx)",
		},
		{
			name:       "no /dev/kvm",
			root:       func(t *testing.T) string { return fakeHost(t, "svm", "", "kvm", "kvm_amd") },
			openErr:    os.ErrNotExist,
			wantKind:   None,
			wantReason: "file does not exist",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := Gather(tc.root(t))
			f.OpenErr = tc.openErr
			probed := false
			f.Probe = func() error { probed = true; return tc.probe }
			r := Classify(f)
			if r.Kind != tc.wantKind || r.Reason != tc.wantReason || probed != tc.wantProbed {
				t.Fatalf("Classify = %v %q (probed %v), want %v %q (probed %v)", r.Kind, r.Reason, probed, tc.wantKind, tc.wantReason, tc.wantProbed)
			}
		})
	}
}

func TestGatherReadsBothModuleLists(t *testing.T) {
	root := fakeHost(t, "a b svm c", "kvm_amd 1 0 - Live 0x0\nbridge 1 0 - Live 0x0\n", "kvm", "kvm_pvm", "tun")
	f := Gather(root)
	if want := []string{"kvm", "kvm_amd", "kvm_pvm"}; !slices.Equal(f.Modules, want) {
		t.Errorf("modules %q, want %q", f.Modules, want)
	}
	if want := []string{"a", "b", "svm", "c"}; !slices.Equal(f.CPUFlags, want) {
		t.Errorf("flags %q, want the first processor's %q", f.CPUFlags, want)
	}
	if f.Probe != nil || f.OpenErr != nil {
		t.Error("a fake root must not probe or open the live /dev/kvm")
	}
}

func TestReportString(t *testing.T) {
	if s := (Report{Kind: Software, Reason: "kvm_pvm (no svm/vmx)"}).String(); s != "/dev/kvm is kvm_pvm (no svm/vmx)" {
		t.Error(s)
	}
	if s := (Report{Kind: None, Reason: "open /dev/kvm: no such file or directory"}).String(); s != "no usable /dev/kvm (open /dev/kvm: no such file or directory)" {
		t.Error(s)
	}
}
