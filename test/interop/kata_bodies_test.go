package interop

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	chclient "github.com/kata-containers/kata-containers/src/runtime/virtcontainers/pkg/cloud-hypervisor/client"
)

// TestKataBodiesAgainstDocument checks, with the OpenAPI cross-check, the
// request bodies of Kata's code paths the life-cycle test does not take:
// the NVDIMM rootfs with initramfs-less boot, TDX-less IOMMU platform,
// memory templating (size 0 plus a zone), rate limiters, VFIO cold- and
// hot-plug, memory resize, restore.
func TestKataBodiesAgainstDocument(t *testing.T) {
	vm := kataVMConfig("/run/vc/vm/sb")
	vm.Disks = nil
	pmem := chclient.NewPmemConfig("/usr/share/kata-containers/kata-containers.img")
	*pmem.DiscardWrites = true
	pmem.SetIommu(true)
	vm.Pmem = &[]chclient.PmemConfig{*pmem}
	vm.Platform.SetIommuSegments([]int32{0})
	vm.Memory.Size = 0
	zone := chclient.NewMemoryZoneConfig("mem0", 2048<<20)
	zone.SetFile("/run/vc/template/memory")
	zone.SetShared(true)
	vm.Memory.Zones = &[]chclient.MemoryZoneConfig{*zone}
	vfio := chclient.NewDeviceConfig("/sys/bus/pci/devices/0000:3b:00.0")
	vfio.SetIommu(true)
	vfio.SetId("vfio0")
	vm.Devices = &[]chclient.DeviceConfig{*vfio}
	vm.Payload.SetInitramfs("/usr/share/kata-containers/kata-containers-initrd.img")

	rl := chclient.NewRateLimiterConfig()
	rl.SetBandwidth(*chclient.NewTokenBucket(1<<20, 1000))
	rl.SetOps(*chclient.NewTokenBucket(100, 1000))
	nic := kataNet("02:00:ca:fe:00:09")
	nic.SetRateLimiterConfig(*rl)
	disk := chclient.NewDiskConfig()
	p := "/dev/mapper/vol2"
	disk.Path = &p
	disk.SetRateLimiterConfig(*rl)
	disk.SetDirect(true)
	ram := int64(4096 << 20)
	restore := chclient.NewRestoreConfig("file:///run/vc/template")

	cases := []struct {
		path string
		body any
	}{
		{"vm.create", vm},
		{"vm.add-net", nic},
		{"vm.add-disk", disk},
		{"vm.add-device", vfio},
		{"vm.resize", chclient.VmResize{DesiredRam: &ram}},
		{"vm.restore", restore},
	}
	for _, c := range cases {
		body, err := json.Marshal(c.body)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("PUT", "http://localhost/api/v1/"+c.path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		problems, _ := checkRequest(t, req, body)
		for _, p := range problems {
			t.Errorf("%s", p)
		}
	}

	// The server takes the templated config as it is.
	n := startNimbus(t, nil)
	cl := kataClient(t, n.sock)
	if _, err := cl.CreateVM(t.Context()).VmConfig(vm).Execute(); err != nil {
		t.Fatalf("vm.create (template config): %v", openAPIClientError(err))
	}
	info, _, err := cl.VmInfoGet(t.Context()).Execute()
	if err != nil || info.Config.Memory.GetZones()[0].GetFile() != "/run/vc/template/memory" || info.Config.GetPmem()[0].GetDiscardWrites() != true {
		t.Errorf("vm.info: %+v %v", info.Config.Memory, openAPIClientError(err))
	}
}
