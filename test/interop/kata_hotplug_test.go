package interop

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	chclient "github.com/kata-containers/kata-containers/src/runtime/virtcontainers/pkg/cloud-hypervisor/client"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// The vmmtest machine cannot hot-resize, so these tests put a shim between
// the API server and the control loop that answers resize as a machine
// would (ErrBusy while a vCPU removal is pending) and add-disk with a fixed
// PciDeviceInfo. What they check is the wire format Kata's code depends
// on: the 429 status line and the bdf syntax.

// busyResizes answers the first n vm.resize requests with ErrBusy and
// passes the rest (and every other command) to the loop.
func busyResizes(n int32, seen *atomic.Int32) func(vmm.Handler) vmm.Handler {
	return func(next vmm.Handler) vmm.Handler {
		return handlerFunc(func(ctx context.Context, cmd vmm.Command) (any, error) {
			if _, ok := cmd.(vmm.Resize); ok && seen.Add(1) <= n {
				return nil, fmt.Errorf("The VM could not be resized: %w", vmm.ErrBusy)
			}
			return next.Do(ctx, cmd)
		})
	}
}

func createKataVM(t *testing.T, cl *chclient.DefaultApiService) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clhCreateAndBootVMTime)
	defer cancel()
	if _, err := cl.CreateVM(ctx).VmConfig(kataVMConfig("/run/vc/vm/sb")).Execute(); err != nil {
		t.Fatalf("vm.create: %v", openAPIClientError(err))
	}
}

// TestKataResizeRetriesOn429: Kata retries only while the error text has
// "Too Many Requests", which its generated client takes from the status
// line; the retry must then reach the loop and succeed.
func TestKataResizeRetriesOn429(t *testing.T) {
	var seen atomic.Int32
	n := startNimbus(t, busyResizes(3, &seen))
	cl := kataClient(t, n.sock)
	createKataVM(t, cl)
	attempts, err := kataResizeVCPUs(cl, 2)
	if err != nil || attempts != 4 {
		t.Fatalf("resize: %v after %d attempts, want success on the 4th", err, attempts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clhAPITimeout)
	defer cancel()
	info, _, err := cl.VmInfoGet(ctx).Execute()
	if err != nil || info.Config.Cpus.BootVcpus != 2 {
		t.Errorf("after the retried resize: boot_vcpus %d, %v", info.Config.Cpus.BootVcpus, err)
	}
}

// TestKata429StatusLine pins the exact error text Kata matches on.
func TestKata429StatusLine(t *testing.T) {
	var seen atomic.Int32
	n := startNimbus(t, busyResizes(100, &seen))
	cl := kataClient(t, n.sock)
	createKataVM(t, cl)
	ctx, cancel := context.WithTimeout(context.Background(), clhAPITimeout)
	defer cancel()
	two := int32(2)
	resp, err := cl.VmResizePut(ctx).VmResize(chclient.VmResize{DesiredVcpus: &two}).Execute()
	if err == nil || err.Error() != "429 Too Many Requests" || resp == nil || resp.StatusCode != 429 {
		t.Fatalf("resize while busy: %v", err)
	}
	if got := openAPIClientError(err).Error(); !strings.Contains(got, `"operation pending, retry later"`) {
		t.Errorf("error body: %s", got)
	}
}

// TestKataHotplugDiskBDF: a hot-add reply is decoded by Kata's client
// (Content-Type must be JSON) and its bdf must pass clh.go's check.
func TestKataHotplugDiskBDF(t *testing.T) {
	n := startNimbus(t, func(next vmm.Handler) vmm.Handler {
		return handlerFunc(func(ctx context.Context, cmd vmm.Command) (any, error) {
			if _, ok := cmd.(vmm.AddDisk); ok {
				return &vmm.PciDeviceInfo{ID: "_disk2", BDF: "0000:00:06.0"}, nil
			}
			return next.Do(ctx, cmd)
		})
	})
	cl := kataClient(t, n.sock)
	createKataVM(t, cl)
	ctx, cancel := context.WithTimeout(context.Background(), clhHotPlugAPITimeout)
	defer cancel()
	disk := *chclient.NewDiskConfig()
	p := "/dev/mapper/vol1"
	disk.Path = &p
	pci, resp, err := cl.VmAddDiskPut(ctx).DiskConfig(disk).Execute()
	if err != nil {
		t.Fatalf("add-disk: %v", openAPIClientError(err))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if pci.Id != "_disk2" || kataBDFCheck(pci.Bdf) != nil {
		t.Errorf("reply %+v: %v", pci, kataBDFCheck(pci.Bdf))
	}
	// The check itself rejects what Kata rejects.
	for _, bad := range []string{"0000:00:6.0", "0001:00:06.0", "0000:01:06.0", "0000:00:06.1", "00:06.0"} {
		if kataBDFCheck(bad) == nil {
			t.Errorf("kataBDFCheck accepted %q", bad)
		}
	}
}
