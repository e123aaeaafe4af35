package vmm_test

import (
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
	"github.com/nimbus-vmm/nimbus/internal/vmm/vmmtest"
)

// TestHotplugThroughTheLoop: on a running VM, vm.add-disk and vm.add-net
// reach the machine with upstream's next ids (the boot's shared counter
// goes on), reply with its PciDeviceInfo and store the device with its
// runtime values; vm.remove-device forgets the device (closing a NIC's
// received fds) at once, and the guest's eject ends in upstream's
// device-removed event.
func TestHotplugThroughTheLoop(t *testing.T) {
	h, hm := bootHotplug(t)

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
	// A device the guest ejects on its own stays in the config, as
	// upstream's eject_device leaves it (it comes back at the next boot).
	hm.Eject("_disk2")
	h.eventsUntil("vm device-removed")
	if c := info(h).Config; len(c.Disks) != 2 {
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
	h, hm := bootHotplug(t)
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

// TestHotResizeMemory: a RAM size on a running VM goes to the machine and
// then, as upstream, into memory.size and memory_actual_size; a refusal
// comes back under "Memory manager error" (500) with the config unchanged.
func TestHotResizeMemory(t *testing.T) {
	h, hm := bootHotplug(t)
	boot := info(h).Config.Memory.Size
	grown := boot + 512<<20
	h.mustDo(vmm.Resize{DesiredRAM: &grown})
	if vi := info(h); vi.Config.Memory.Size != grown || vi.MemoryActualSize != grown {
		t.Fatalf("after growing to %d: memory.size %d, memory_actual_size %d", grown, vi.Config.Memory.Size, vi.MemoryActualSize)
	}
	hm.ResizeErr = vmm.MemoryManagerLeaf("The requested hotplug memory addition is not a valid size")
	odd := grown + 1<<20
	h.expectErr(vmm.Resize{DesiredRAM: &odd}, vmm.ErrMemoryManager,
		"The VM could not be resized", "Memory manager error", "The requested hotplug memory addition is not a valid size")
	if n := info(h).Config.Memory.Size; n != grown {
		t.Fatalf("memory.size %d after a refused resize", n)
	}
	if !slices.Contains(hm.Calls(), "ResizeMemory("+strconv.FormatUint(grown, 10)+")") {
		t.Errorf("calls %q", hm.Calls())
	}
}

// TestHotResizeZone: on a running VM, vm.resize-zone answers as upstream
// for a VM whose zones have no virtio-mem device: an unknown zone, a size
// below the zone's, and a known zone each with upstream's chain.
func TestHotResizeZone(t *testing.T) {
	h := start(t, false)
	cfg, err := config.Decode([]byte(`{"cpus":{"boot_vcpus":1,"max_vcpus":1},"payload":{"kernel":"/k"},
		"memory":{"size":0,"zones":[{"id":"z0","size":1073741824}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	h.mustDo(vmm.CreateVM{Config: cfg})
	h.mustDo(vmm.BootVM{})
	h.expectErr(vmm.ResizeZone{ID: "nope", DesiredRAM: 2 << 30}, vmm.ErrResizeZone,
		"The memory zone could not be resized", "Failed resizing a memory zone")
	h.expectErr(vmm.ResizeZone{ID: "z0", DesiredRAM: 512 << 20}, vmm.ErrMemoryManager,
		"The memory zone could not be resized", "Memory manager error",
		"Invalid resize request: desired_size = 536870912 below boot size = 1073741824")
	h.expectErr(vmm.ResizeZone{ID: "z0", DesiredRAM: 2 << 30}, vmm.ErrMemoryManager,
		"The memory zone could not be resized", "Memory manager error", "No virtio-mem resizing handler found")
}

// TestHotAddVsock: vm.add-vsock on a running VM reaches the machine with
// upstream's generated id and replies with its PciDeviceInfo; a second
// one is refused as upstream (one vsock device per VM).
func TestHotAddVsock(t *testing.T) {
	h, _ := bootHotplug(t)
	got := h.mustDo(vmm.AddVsock{Config: config.VsockConfig{Cid: 3, Socket: "/v.sock"}})
	if info, ok := got.(*vmm.PciDeviceInfo); !ok || info.ID != "_vsock2" {
		t.Fatalf("add-vsock reply %#v, want _vsock2 (boot used _disk0, _net1)", got)
	}
	if c := info(h).Config; c.Vsock == nil || c.Vsock.ID != "_vsock2" || c.Vsock.Cid != 3 {
		t.Fatalf("config vsock %+v", c.Vsock)
	}
	h.expectErr(vmm.AddVsock{Config: config.VsockConfig{Cid: 4, Socket: "/w.sock"}}, vmm.ErrTooManyVsock,
		"The vsock device could not be added to the VM", "Too many virtio-vsock devices")
}

// bootHotplug is a running VM on the hotplug test double.
func bootHotplug(t *testing.T) (*harness, *vmmtest.HotplugMachine) {
	t.Helper()
	h := start(t, false)
	h.f.Hotplug = true
	h.mustDo(vmm.CreateVM{Config: validConfig(t)})
	h.mustDo(vmm.BootVM{})
	return h, h.f.Hotplugs[0]
}

// TestHotAddPmem: vm.add-pmem on a running VM reaches the machine with
// upstream's generated id, and the config keeps the device.
func TestHotAddPmem(t *testing.T) {
	h, _ := bootHotplug(t)
	got := h.mustDo(vmm.AddPmem{Config: config.PmemConfig{File: "/p.img", DiscardWrites: true}})
	if info, ok := got.(*vmm.PciDeviceInfo); !ok || info.ID != "_pmem2" {
		t.Fatalf("add-pmem reply %#v, want _pmem2 (boot used _disk0, _net1)", got)
	}
	if c := info(h).Config; len(c.Pmem) != 1 || c.Pmem[0].ID != "_pmem2" || !c.Pmem[0].DiscardWrites {
		t.Fatalf("config pmem %+v", c.Pmem)
	}
}
