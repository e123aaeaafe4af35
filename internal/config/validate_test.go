package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func validBase(t *testing.T, extra string) *VmConfig {
	t.Helper()
	body := `{"cpus":{"boot_vcpus":2,"max_vcpus":4},"payload":{"kernel":"/k"}` + extra + `}`
	c, err := Decode([]byte(body))
	if err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return c
}

func TestValidateAcceptsValidConfig(t *testing.T) {
	c := validBase(t, `,"disks":[{"path":"/a","id":"d0"}],"net":[{"tap":"t0","ip":"10.0.0.1","mask":"255.0.0.0"}],
		"memory":{"size":1073741824,"shared":true,"zones":[{"id":"z0","size":1048576}]},"fs":[{"tag":"t","socket":"/s"}],
		"vsock":{"cid":3,"socket":"/v"},"balloon":{"size":1048576},"devices":[{"path":"/sys/a","iommu":true}]`)
	if err := c.Validate(); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	if !c.IOMMU {
		t.Error("device iommu=on was not ORed into VmConfig.iommu")
	}
}

func TestValidateRules(t *testing.T) {
	cases := []struct {
		name, extra, field, msg string
		dup                     bool
	}{
		{"max<boot", `,"cpus":{"boot_vcpus":4,"max_vcpus":2}`, "cpus.max_vcpus", "Max CPUs lower than boot CPUs", false},
		{"max limit", `,"cpus":{"boot_vcpus":1,"max_vcpus":9000}`, "cpus.max_vcpus", "greater than the supported maximum", false},
		{"topology product", `,"cpus":{"boot_vcpus":1,"max_vcpus":4,"topology":{"threads_per_core":1,"cores_per_die":2,"dies_per_package":1,"packages":1}}`, "cpus.topology", "Product of CPU topology parts does not match maximum vCPU", false},
		{"topology zero", `,"cpus":{"boot_vcpus":1,"max_vcpus":4,"topology":{"threads_per_core":0,"cores_per_die":2,"dies_per_package":1,"packages":2}}`, "cpus.topology", "No part of the CPU topology can be zero", false},
		{"threads>2", `,"cpus":{"boot_vcpus":1,"max_vcpus":4,"topology":{"threads_per_core":4,"cores_per_die":1,"dies_per_package":1,"packages":1}}`, "cpus.topology.threads_per_core", "greater than 2", false},
		{"disk queue pow2", `,"disks":[{"path":"/a","queue_size":100}]`, "disks[0].queue_size", "power of 2", false},
		{"disk queue small", `,"disks":[{"path":"/a","queue_size":2}]`, "disks[0].queue_size", "Queue size is smaller than 2: 2", false},
		{"disk queues>vcpus", `,"disks":[{"path":"/a","num_queues":3}]`, "disks[0].num_queues", "Queue count (3) must not exceed boot vCPUs (2)", false},
		{"net queues>vcpus", `,"net":[{"num_queues":6}]`, "net[0].num_queues", "Queue count (6) must not exceed boot vCPUs (2)", false},
		{"net queues<2", `,"net":[{"num_queues":1}]`, "net[0].num_queues", "Number of queues (1) to virtio_net should be higher than 2", false},
		{"net fds mismatch", `,"net":[{"num_queues":4,"fds":[3]}]`, "net[0].fds", "Number of queues (4) to virtio_net does not match the number of FDs (2)", false},
		{"shared+mergeable", `,"memory":{"size":1073741824,"shared":true,"mergeable":true}`, "memory.mergeable", "shared and mergeable", false},
		{"hugepage_size w/o hugepages", `,"memory":{"size":1073741824,"hugepage_size":2097152}`, "memory.hugepage_size", "Huge page size specified but huge pages not enabled", false},
		{"hugepage_size pow2", `,"memory":{"size":1073741824,"hugepages":true,"hugepage_size":3000000}`, "memory.hugepage_size", "Huge page size is not power of 2: 3000000", false},
		{"ip without mask", `,"net":[{"ip":"10.0.0.1"}]`, "net[0].mask", "together", false},
		{"mtu", `,"net":[{"mtu":1000}]`, "net[0].mtu", "Provided MTU 1000 is lower than 1280", false},
		{"offload", `,"net":[{"offload_csum":false}]`, "net[0].offload_csum", "depend on", false},
		{"vsock cid", `,"vsock":{"cid":2,"socket":"/v"}`, "vsock.cid", "2 is a special VSOCK CID", false},
		{"vsock cid max", `,"vsock":{"cid":4294967295,"socket":"/v"}`, "vsock.cid", "special VSOCK CID", false},
		{"serial length", `,"disks":[{"path":"/a","serial":"123456789012345678901"}]`, "disks[0].serial", "Block device serial length (21) exceeds maximum allowed length (20)", false},
		{"fs needs shared", `,"fs":[{"tag":"t","socket":"/s"}]`, "fs", "shared memory", false},
		{"vhost-user disk needs shared", `,"disks":[{"vhost_user":true,"vhost_socket":"/s"}]`, "disks[0].vhost_user", "shared memory", false},
		{"user device needs shared", `,"user_devices":[{"socket":"/s"}]`, "user_devices", "Using user devices requires using shared memory", false},
		{"balloon >= ram", `,"balloon":{"size":536870912}`, "balloon.size", "Ballon size (536870912) greater than RAM (536870912)", false},
		{"dup id", `,"disks":[{"path":"/a","id":"x"}],"net":[{"id":"x"}]`, "net[0].id", "Identifier x is not unique", true},
		{"zone id clash", `,"disks":[{"path":"/a","id":"z"}],"memory":{"size":0,"zones":[{"id":"z","size":1048576}]}`, "memory.zones[0].id", "Identifier z is not unique", true},
		{"reserved id", `,"disks":[{"path":"/a","id":"__x"}]`, "disks[0].id", "Identifier __x is not invalid", false},
		{"dup vfio path", `,"devices":[{"path":"/sys/a"},{"path":"/sys/a"}]`, "devices[1].path", "Duplicated device path: /sys/a", true},
		{"no payload", `,"payload":null`, "payload", "No bootitem provided: neither firmware nor kernel", false},
		{"fw+kernel", `,"payload":{"firmware":"/f","kernel":"/k"}`, "payload.kernel", "Specifying a kernel is not supported when a firmware is provided", false},
		{"socket+path", `,"disks":[{"path":"/a","vhost_socket":"/s"}]`, "disks[0]", "Disk path and vhost socket both provided", false},
		{"missing group", `,"disks":[{"path":"/a","rate_limit_group":"g"}]`, "disks[0].rate_limit_group", "Invalid rate-limiter group", false},
		{"pci segment", `,"disks":[{"path":"/a","pci_segment":1}]`, "disks[0].pci_segment", "Invalid PCI segment id: 1", false},
		{"num pci segments", `,"platform":{"num_pci_segments":97}`, "platform.num_pci_segments", "Number of PCI segments (97) not in range of 1 to 96", false},
		{"console file", `,"console":{"mode":"File"}`, "console.file", "Path missing when using file console mode", false},
		{"numa zone reuse", `,"numa":[{"guest_numa_id":0,"memory_zones":["a"]},{"guest_numa_id":1,"memory_zones":["a"]}]`, "numa[1].memory_zones", "Memory zone: a belongs to multiple NUMA nodes: 0 and 1", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validBase(t, tc.extra)
			err := c.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("%T is not *ValidationError", err)
			}
			if ve.Field != tc.field || !strings.Contains(ve.Msg, tc.msg) {
				t.Errorf("got field %q msg %q; want field %q msg containing %q", ve.Field, ve.Msg, tc.field, tc.msg)
			}
			if errors.Is(err, ErrDuplicate) != tc.dup || errors.Is(err, ErrInvalid) == tc.dup {
				t.Errorf("wrong category for %v (dup=%v)", err, tc.dup)
			}
		})
	}
}

func TestValidateFirmwareDropsCmdline(t *testing.T) {
	c, err := Decode([]byte(`{"payload":{"firmware":"/f","cmdline":"x","initramfs":"/i"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Payload.Cmdline != "" || c.Payload.Initramfs != "" {
		t.Errorf("cmdline/initramfs kept with firmware: %+v", c.Payload)
	}
}

func TestAssignDeviceIDs(t *testing.T) {
	c := validBase(t, `,"disks":[{"path":"/a"},{"path":"/b","id":"_disk1"}],"net":[{"tap":"t"}],"pmem":[{"file":"/p"}],"devices":[{"path":"/sys/x"}]`)
	c.AssignDeviceIDs()
	got := []string{c.Disks[0].ID, c.Disks[1].ID, c.Net[0].ID, c.Pmem[0].ID, c.Devices[0].ID}
	// One counter across kinds, advanced only when an id is generated
	// (upstream next_device_name).
	want := []string{"_disk0", "_disk1", "_net1", "_pmem2", "_vfio3"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("ids = %v, want %v", got, want)
			break
		}
	}
	if c.Rng.ID != "" {
		t.Errorf("rng id written into config: %q", c.Rng.ID)
	}
}

// TestAssignDeviceIDsAllKinds pins the creation order over every prefixed
// kind and that ids of memory zones and rate-limit groups are skipped.
func TestAssignDeviceIDsAllKinds(t *testing.T) {
	c := DefaultVmConfig()
	c.Disks = []DiskConfig{{}, {}}
	c.Disks[1].ID = "mine"
	c.Net = []NetConfig{{}}
	c.Fs = []FsConfig{{}}
	c.Pmem = []PmemConfig{{}}
	c.Vsock = &VsockConfig{}
	c.Vdpa = []VdpaConfig{{}}
	c.GenericVhostUser = []GenericVhostUserConfig{{}}
	c.Devices = []DeviceConfig{{}}
	c.UserDevices = []UserDeviceConfig{{}, {}}
	c.Memory.Zones = []MemoryZoneConfig{{ID: "_net1"}, {}}
	c.RateLimitGroups = []RateLimiterGroupConfig{{ID: "_vdpa6"}, {}}
	c.AssignDeviceIDs()
	got := []string{c.Disks[0].ID, c.Disks[1].ID, c.Net[0].ID, c.Fs[0].ID, c.Pmem[0].ID, c.Vsock.ID,
		c.Vdpa[0].ID, c.GenericVhostUser[0].ID, c.Devices[0].ID, c.UserDevices[0].ID, c.UserDevices[1].ID,
		c.Memory.Zones[1].ID, c.RateLimitGroups[1].ID}
	want := []string{"_disk0", "mine", "_net2", "_fs3", "_pmem4", "_vsock5",
		"_vdpa7", "_generic_vhost_user8", "_vfio9", "_vfio_user10", "_vfio_user11", "", ""}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ids = %v\nwant  %v", got, want)
	}
}
