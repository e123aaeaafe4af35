package lifecycle

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
	"github.com/nimbus-vmm/nimbus/internal/boot"
	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
	"github.com/nimbus-vmm/nimbus/internal/testproc"
	"github.com/nimbus-vmm/nimbus/pkg/client"
)

// tripleFaultEntry is where the payload's code is loaded and entered: the
// PVH loader only takes segments in RAM above 1 MiB.
const tripleFaultEntry = 0x100000

// tripleFaultCode is the payload's 32-bit protected-mode entry (flat
// segments, paging off, IF clear). It loads an IDT of limit 0, arms the
// local APIC timer (in-kernel, 1 ns per bus cycle) for 0.5 s and halts;
// the timer interrupt cannot be delivered through that IDT (#GP), nor the
// #GP (#DF), nor the #DF: the CPU shuts down, which KVM reports as
// KVM_EXIT_SHUTDOWN. It does so at every boot. The wait is there because
// a guest that faults at once makes Nimbus recreate the VM as fast as it
// can, and under the nested QEMU sandbox that storm starved the sandbox
// kernel (RCU stalls, soft lockups) within seconds; halting costs the
// host nothing.
var tripleFaultCode = []byte{
	0x0f, 0x01, 0x1d, 0x40, 0x00, 0x10, 0x00, // 0x100000: lidt [0x100040]
	0xc7, 0x05, 0xf0, 0x00, 0xe0, 0xfe, 0xff, 0x01, 0x00, 0x00, // mov dword [0xfee000f0], 0x1ff      ; SVR: APIC on, spurious 0xff
	0xc7, 0x05, 0xe0, 0x03, 0xe0, 0xfe, 0x0b, 0x00, 0x00, 0x00, // mov dword [0xfee003e0], 0xb        ; timer divide by 1
	0xc7, 0x05, 0x20, 0x03, 0xe0, 0xfe, 0x20, 0x00, 0x00, 0x00, // mov dword [0xfee00320], 0x20       ; LVT timer: one-shot, vector 0x20
	0xc7, 0x05, 0x80, 0x03, 0xe0, 0xfe, 0x00, 0x65, 0xcd, 0x1d, // mov dword [0xfee00380], 500000000  ; initial count: 0.5 s
	0xfb,       // 0x10002f: sti
	0xf4,       // 0x100030: hlt               ; the timer interrupt faults here
	0xcc,       // 0x100031: int3              ; faults too, should hlt ever return
	0xeb, 0xfe, // 0x100032: jmp 0x100032
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // pad to 0x100040
	0, 0, 0, 0, 0, 0, // 0x100040: IDT descriptor: limit 0, base 0
}

// tripleFaultELF is an ELF64 x86-64 executable whose only PT_LOAD holds
// tripleFaultCode at tripleFaultEntry and whose PT_NOTE carries the PVH
// entry (a "Xen" note of type XEN_ELFNOTE_PHYS32_ENTRY, 18): what
// internal/boot's loadPVH accepts.
func tripleFaultELF() []byte {
	le := binary.LittleEndian
	const ehsize, phsize, nph = 64, 56, 2
	note := le.AppendUint32(nil, 4)                // namesz: "Xen\0"
	note = le.AppendUint32(note, 4)                // descsz
	note = le.AppendUint32(note, 18)               // XEN_ELFNOTE_PHYS32_ENTRY
	note = append(note, "Xen\x00"...)              // name, already 4-aligned
	note = le.AppendUint32(note, tripleFaultEntry) // desc: the 32-bit entry

	h := make([]byte, ehsize)
	copy(h, "\x7fELF")
	h[4], h[5], h[6] = 2, 1, 1 // ELFCLASS64, little-endian, EV_CURRENT
	le.PutUint16(h[16:], 2)    // ET_EXEC
	le.PutUint16(h[18:], 62)   // EM_X86_64
	le.PutUint32(h[20:], 1)
	le.PutUint64(h[24:], tripleFaultEntry)
	le.PutUint64(h[32:], ehsize) // e_phoff
	le.PutUint16(h[52:], ehsize)
	le.PutUint16(h[54:], phsize)
	le.PutUint16(h[56:], nph)

	off := uint64(ehsize + phsize*nph)
	ph := func(typ, flags uint32, off, addr uint64, data []byte) []byte {
		p := make([]byte, phsize)
		le.PutUint32(p[0:], typ)
		le.PutUint32(p[4:], flags)
		le.PutUint64(p[8:], off)
		le.PutUint64(p[16:], addr) // vaddr
		le.PutUint64(p[24:], addr) // paddr: where the loader puts it
		le.PutUint64(p[32:], uint64(len(data)))
		le.PutUint64(p[40:], uint64(len(data)))
		le.PutUint64(p[48:], 4)
		return p
	}
	b := append(h, ph(1, 5, off, tripleFaultEntry, tripleFaultCode)...)   // PT_LOAD, R+X
	b = append(b, ph(4, 4, off+uint64(len(tripleFaultCode)), 0, note)...) // PT_NOTE
	b = append(b, tripleFaultCode...)
	return append(b, note...)
}

// startBare runs nimbus -v with only the API socket and the event
// monitor, no VM: the test creates and boots the VM over the API, so it
// can measure the process before the first boot.
func startBare(t *testing.T) *vmmProc {
	t.Helper()
	a := guesttest.Require(t)
	if a.BinDir == "" {
		t.Skip("no nimbus binary: set NIMBUS_BIN_DIR or run `make build`")
	}
	bin := filepath.Join(a.BinDir, "nimbus")
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no nimbus binary in %s: %v", a.BinDir, err)
	}
	dir, err := os.MkdirTemp("", "nimbus-tf") // sun_path is 108 bytes; t.TempDir can be longer
	if err != nil {
		t.Fatal(err)
	}
	return startVMM(t, dir, bin)
}

// threadNames lists the process's threads by name (/proc/PID/task/*/comm).
// Threads that end while it reads are skipped.
func (p *vmmProc) threadNames() []string {
	p.t.Helper()
	names, err := testproc.ThreadNames(p.cmd.Process.Pid)
	if err != nil {
		p.t.Fatal(err)
	}
	return names
}

// vcpuThreads counts the threads internal/vm named "vcpu<n>".
func vcpuThreads(names []string) int {
	n := 0
	for _, s := range names {
		if strings.HasPrefix(s, "vcpu") {
			n++
		}
	}
	return n
}

// countEvents counts ev ("source event") in evs.
func countEvents(evs []string, ev string) int {
	n := 0
	for _, e := range evs {
		if e == ev {
			n++
		}
	}
	return n
}

// tripleFaultThreadSlack is how many threads above the count before
// vm.boot the process may keep after vm.shutdown: Go keeps idle runtime
// threads (Ms) started for blocking syscalls during the boots. A leaked
// vCPU thread is caught by its name, not by this slack.
const tripleFaultThreadSlack = 4

// TestGuestTripleFault boots a payload that triple-faults half a second
// into every boot. Nimbus logs the fault with the registers and, as upstream,
// treats it as a reset: the VM reboots over and over. Through that reboot
// storm the API must keep answering (vm.info says Running), the events
// must show the reboots, vm.shutdown and vm.delete must work and leave no
// vCPU thread behind, and vmm.shutdown must end the process with status 0.
func TestGuestTripleFault(t *testing.T) {
	p := startBare(t)
	kernel := filepath.Join(p.dir, "triplefault.elf")
	if err := os.WriteFile(kernel, tripleFaultELF(), 0o644); err != nil {
		t.Fatal(err)
	}
	stream := p.streamEvents()
	body, err := json.Marshal(map[string]any{
		"cpus":    map[string]any{"boot_vcpus": 1, "max_vcpus": 1},
		"memory":  map[string]any{"size": 64 << 20},
		"payload": map[string]any{"kernel": kernel},
		"serial":  map[string]any{"mode": "Null"},
		"console": map[string]any{"mode": "Off"},
	})
	if err != nil {
		t.Fatal(err)
	}
	p.do("create", func(ctx context.Context) error { return p.api.Create(ctx, body) })
	p.wantState(client.StateCreated)
	before := p.threadNames()
	if n := vcpuThreads(before); n != 0 {
		t.Fatalf("%d vCPU threads before vm.boot: %q", n, before)
	}
	t.Logf("before vm.boot: %d threads %q", len(before), before)

	p.do("boot", p.api.Boot)
	bootedAt := time.Now()
	p.waitFor("the triple fault in the log", bootTimeout, func() bool {
		return strings.Contains(p.processLog(), "guest triple fault")
	})
	p.waitFor("two reboots in the events", bootTimeout, func() bool {
		return countEvents(p.events(), "vm rebooted") >= 2
	})

	// The guest keeps faulting: every answer must come, and say Running
	// (the loop reboots between requests, never leaving a half-built VM
	// visible). The reboot count must go on rising meanwhile: the API
	// does not stop the storm, nor the storm the API.
	rebootsBefore := countEvents(p.events(), "vm rebooted")
	maxThreads, maxVcpus := 0, 0 // for the log: what a running VM adds
	for i := 0; i < 20; i++ {
		p.wantState(client.StateRunning)
		names := p.threadNames()
		maxThreads, maxVcpus = max(maxThreads, len(names)), max(maxVcpus, vcpuThreads(names))
		ctx, cancel := p.ctx()
		_, err := p.api.Ping(ctx)
		cancel()
		if err != nil {
			t.Fatalf("vmm.ping during the reboot storm: %v", err)
		}
		time.Sleep(pollEvery)
	}
	p.waitFor("reboots to continue", bootTimeout, func() bool {
		return countEvents(p.events(), "vm rebooted") > rebootsBefore
	})

	t.Logf("while faulting: up to %d threads, up to %d named vcpu*", maxThreads, maxVcpus)

	p.do("shutdown", p.api.Shutdown)
	stormed := time.Since(bootedAt)
	p.wantState(client.StateCreated) // as upstream: a shut-down VM with a config is Created
	// The monitor writes asynchronously: wait for the shutdown event.
	p.waitFor("the vm shutdown event", apiTimeout, func() bool {
		evs := vmEvents(p.events())
		return len(evs) > 0 && evs[len(evs)-1] == "vm shutdown"
	})
	faults := strings.Count(p.processLog(), "guest triple fault")
	evs := vmEvents(p.events())
	reboots := countEvents(evs, "vm rebooted")
	t.Logf("%d triple faults and %d reboots in %.1fs (%.1f/s)", faults, reboots, stormed.Seconds(), float64(reboots)/stormed.Seconds())
	// Each fault is one reset, one reboot; only a fault just before the
	// shutdown may go without its reboot.
	if faults < reboots || faults > reboots+1 {
		t.Errorf("%d triple faults logged for %d reboots", faults, reboots)
	}

	// The log line: Warn level, with the registers. Their values depend on
	// the host: on AMD, KVM reinitialises the VMCB on a shutdown intercept,
	// so rip is the reset vector's rather than the hlt's.
	log := p.processLog()
	var faultLine string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "guest triple fault") {
			faultLine = l
			break
		}
	}
	t.Logf("first fault: %s", faultLine)
	if !strings.Contains(faultLine, "rip=0x") || !strings.Contains(faultLine, "cr0=0x") {
		t.Errorf("triple fault log line without the registers: %q", faultLine)
	}
	if !strings.Contains(faultLine, "level=WARN") {
		t.Errorf("triple fault log line is not a warning: %q", faultLine)
	}

	// Events: the boot, then only reboot pairs, then the shutdown.
	if len(evs) < 4 || evs[0] != "vmm starting" || evs[1] != "vm booting" || evs[2] != "vm booted" {
		t.Fatalf("events start %q", evs)
	}
	last := evs[len(evs)-1]
	if last != "vm shutdown" {
		t.Fatalf("last event %q, want \"vm shutdown\"; events %q", last, evs)
	}
	storm := evs[3 : len(evs)-1]
	// The shutdown may land between a "rebooting" and its "rebooted"
	// only if the reboot failed, which it must not.
	for i, e := range storm {
		want := "vm rebooting"
		if i%2 == 1 {
			want = "vm rebooted"
		}
		if e != want {
			t.Fatalf("event %d of the storm is %q, want %q; events %q", i, e, want, evs)
		}
	}
	if len(storm)%2 != 0 {
		t.Fatalf("a reboot without its \"vm rebooted\": %q", evs)
	}
	if got := stream(); countEvents(got, "vm rebooted") < 1 || got[len(got)-1] != "vm shutdown" {
		t.Fatalf("API event stream has no reboot or does not end with the shutdown: %q", got)
	}

	// vm.shutdown has joined the vCPU goroutines (each locked to its
	// thread, so the thread ends with it): no vCPU thread may remain.
	var after []string
	settled := func() bool {
		after = p.threadNames()
		return vcpuThreads(after) == 0 && len(after) <= len(before)+tripleFaultThreadSlack
	}
	deadline := time.Now().Add(10 * time.Second)
	for !settled() && time.Now().Before(deadline) {
		time.Sleep(pollEvery)
	}
	t.Logf("after vm.shutdown: %d threads %q", len(after), after)
	if !settled() {
		t.Fatalf("after vm.shutdown: %d threads (%d vCPU) %q; before vm.boot %d %q",
			len(after), vcpuThreads(after), after, len(before), before)
	}

	// The VMM is idle and sane: no more faults, delete works, the API
	// answers, and vmm.shutdown exits 0.
	faults = strings.Count(p.processLog(), "guest triple fault")
	time.Sleep(quiet)
	if n := strings.Count(p.processLog(), "guest triple fault"); n != faults {
		t.Fatalf("%d triple faults after vm.shutdown", n-faults)
	}
	p.do("delete", p.api.Delete)
	if s, err := p.state(); err == nil {
		t.Fatalf("vm.info after delete = %q, want an error (no VM)", s)
	}
	p.do("vmm.shutdown", p.api.ShutdownVMM)
	if code := p.waitExit(exitTimeout); code != 0 {
		t.Fatalf("exit status after vmm.shutdown = %d, want 0", code)
	}
	if got := vmEvents(p.events()); len(got) < 2 || got[len(got)-2] != "vm deleted" || got[len(got)-1] != "vmm shutdown" {
		t.Fatalf("events %q, want them to end with vm deleted, vmm shutdown", got)
	}
}

// flatMem is guest memory as one byte slice from address 0.
type flatMem []byte

func (m flatMem) WriteAt(p []byte, gpa int64) (int, error) {
	if gpa < 0 || gpa+int64(len(p)) > int64(len(m)) {
		return 0, fmt.Errorf("write [%#x, +%#x) outside %#x bytes", gpa, len(p), len(m))
	}
	return copy(m[gpa:], p), nil
}

// TestTripleFaultELFLoads checks, without KVM, that Nimbus's loader takes
// the payload as a PVH kernel entered at its code.
func TestTripleFaultELFLoads(t *testing.T) {
	const size = 64 << 20
	mem := make(flatMem, size)
	res, err := boot.LoadImage(mem, x86.RAMRegions(size), boot.Params{Kernel: tripleFaultELF()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Protocol != boot.PVH || res.Entry != tripleFaultEntry {
		t.Fatalf("loaded as %v entered at %#x, want PVH at %#x", res.Protocol, res.Entry, tripleFaultEntry)
	}
	if got := mem[tripleFaultEntry : tripleFaultEntry+len(tripleFaultCode)]; !bytes.Equal(got, tripleFaultCode) {
		t.Fatalf("guest memory at the entry % x, want % x", got, tripleFaultCode)
	}
}
