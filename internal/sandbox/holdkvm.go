package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/nimbus-vmm/nimbus/internal/kvm"
)

// HoldKVM keeps one idle KVM VM (in-kernel irqchip, one vCPU that never
// runs) open until ctx ends, writing "ready" to w once it exists.
//
// Why: when the number of VMs goes from 0 to 1 or back, KVM flips kernel
// static keys (preempt_notifier_key, whose jump labels sit in __schedule;
// the LAPIC's apic_sw_disabled), and the kernel patches that code with
// int3 (text_poke_bp) while the other CPUs run it. Under QEMU 7.2's TCG
// the sandbox kernel has locked up on exactly that, one vCPU in exc_int3
// and the other in __schedule, interrupts off, during KVM tests that
// create and destroy VMs quickly. With one VM held for the whole run the
// keys stay on and that code is never patched again.
func HoldKVM(ctx context.Context, w io.Writer) error {
	sys, err := kvm.Open()
	if err != nil {
		return err
	}
	defer sys.Close()
	vm, err := sys.CreateVM()
	if err != nil {
		return err
	}
	defer vm.Close()
	if err := vm.CreateIRQChip(); err != nil {
		return err
	}
	v, err := vm.CreateVcpu(0)
	if err != nil {
		return err
	}
	defer v.Close()
	fmt.Fprintln(w, "ready")
	<-ctx.Done()
	if errors.Is(ctx.Err(), context.Canceled) {
		return nil
	}
	return ctx.Err()
}

// holdKVMScript is the test script's preamble in QEMU mode: start
// `nimbus-sandbox hold-kvm` (the binary at holder, its output in out) and
// wait until its VM exists, so that no test ever takes the VM count
// through zero. $hold is the holder's pid.
func holdKVMScript(holder, out string) string {
	return fmt.Sprintf(`%[1]s hold-kvm >%[2]s 2>&1 &
hold=$!
i=0
while ! grep -q ready %[2]s && kill -0 $hold 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
grep -q ready %[2]s || echo "%[3]s hold-kvm did not start: $(cat %[2]s)"
`, quote(holder), quote(out), errPrefix)
}
