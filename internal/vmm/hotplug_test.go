package vmm_test

import (
	"os"
	"slices"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// TestHotplugThroughTheLoop: on a running VM, vm.add-disk and vm.add-net
// reach the machine with upstream's next ids (the boot's shared counter
// goes on), reply with its PciDeviceInfo and store the device with its
// runtime values; vm.remove-device forgets the device (closing a NIC's
// received fds) at once, and the guest's eject ends in upstream's
// device-removed event.
func TestHotplugThroughTheLoop(t *testing.T) {
	h := start(t, false)
	h.f.Hotplug = true
	h.mustDo(vmm.CreateVM{Config: validConfig(t)})
	h.mustDo(vmm.BootVM{})
	hm := h.f.Hotplugs[0]

	got := h.mustDo(vmm.AddDisk{Config: disk(t, `{"path":"/b.img"}`)})
	if info, ok := got.(*vmm.PciDeviceInfo); !ok || info.ID != "_disk2" || info.BDF != "0000:00:05.0" {
		t.Fatalf("add-disk reply %#v, want _disk2 (boot used _disk0, _net1)", got)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	got = h.mustDo(vmm.AddNet{Config: netCfg(t, `{"id":"nic7"}`), Fds: []*os.File{r}})
	if info, ok := got.(*vmm.PciDeviceInfo); !ok || info.ID != "nic7" || info.BDF != "0000:00:06.0" {
		t.Fatalf("add-net reply %#v", got)
	}
	c := info(h).Config
	if len(c.Disks) != 2 || c.Disks[1].ID != "_disk2" || len(c.Net) != 2 || len(c.Net[1].Fds) != 1 || c.Net[1].MAC == "" {
		t.Fatalf("config after hot adds: disks %+v nets %+v", c.Disks, c.Net)
	}

	h.mustDo(vmm.RemoveDevice{ID: "nic7"})
	if c := info(h).Config; len(c.Net) != 1 {
		t.Fatalf("nets after remove-device: %+v", c.Net)
	}
	if err := r.Close(); err == nil {
		t.Error("the removed NIC's received fd was left open")
	}
	h.expectErr(vmm.RemoveDevice{ID: "nope"}, vmm.ErrNotFound, "The device could not be removed from the VM",
		"Error from device manager", "Failed to find device corresponding to the given identifier: nope")

	hm.Eject("nic7")
	evs := h.eventsUntil("vm device-removed")
	if !slices.Contains(evs, "vm device-removed") {
		t.Fatalf("events %q", evs)
	}
	// A device the guest ejects on its own leaves the config too.
	hm.Eject("_disk2")
	h.eventsUntil("vm device-removed")
	if c := info(h).Config; len(c.Disks) != 1 {
		t.Fatalf("disks after a guest eject: %+v", c.Disks)
	}
	want := []string{"AddDisk", "AddNet", "RemoveDevice", "RemoveDevice"}
	var calls []string
	for _, c := range hm.Calls() {
		if slices.Contains(want, c) {
			calls = append(calls, c)
		}
	}
	if !slices.Equal(calls, want) {
		t.Errorf("machine calls %q, want %q", calls, want)
	}
}

func netCfg(t *testing.T, body string) config.NetConfig {
	t.Helper()
	n, err := config.DecodeBody[config.NetConfig]([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return *n
}

// TestHotResizeVcpus: a vCPU count change on a running VM goes to the
// machine and, on success, into boot_vcpus; a pending removal comes back
// as upstream's 429 chain and leaves the config alone.
func TestHotResizeVcpus(t *testing.T) {
	h := start(t, false)
	h.f.Hotplug = true
	h.mustDo(vmm.CreateVM{Config: validConfig(t)})
	h.mustDo(vmm.BootVM{})
	hm := h.f.Hotplugs[0]
	one := uint32(1)
	h.mustDo(vmm.Resize{DesiredVcpus: &one})
	if n := info(h).Config.Cpus.BootVcpus; n != 1 {
		t.Fatalf("boot_vcpus %d after resize to 1", n)
	}
	hm.ResizeErr = vmm.CPUManagerLeaf(vmm.ErrBusy, "Still pending removed vCPU")
	two := uint32(2)
	h.expectErr(vmm.Resize{DesiredVcpus: &two}, vmm.ErrBusy,
		"The VM could not be resized", "Error from CPU manager", "Still pending removed vCPU")
	if n := info(h).Config.Cpus.BootVcpus; n != 1 {
		t.Fatalf("boot_vcpus %d after a refused resize", n)
	}
	if !slices.Contains(hm.Calls(), "ResizeVcpus(1)") || !slices.Contains(hm.Calls(), "ResizeVcpus(2)") {
		t.Errorf("calls %q", hm.Calls())
	}
}
