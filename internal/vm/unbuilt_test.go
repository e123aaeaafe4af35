package vm

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// built marks a config field the machine builds (or that only selects
// how: ids, paths, sizes); elsewhere in the tree a test exercises it.
const built = ""

// fieldVerdicts says, for every leaf field of VmConfig by JSON path, what
// the machine does with it: built, or refused at boot. A refused field
// maps to the JSON that sets it (merged into a minimal valid config) and
// the walker checks that refuseUnbuilt names it. A field added to the
// config without an entry here fails TestEveryConfigFieldIsBuiltOrRefused.
var fieldVerdicts = map[string]string{
	"cpus.boot_vcpus": built, "cpus.max_vcpus": built, "cpus.max_phys_bits": built,
	"cpus.topology.threads_per_core": built, "cpus.topology.cores_per_die": built,
	"cpus.topology.dies_per_package": built, "cpus.topology.packages": built,
	"cpus.kvm_hyperv":           `"cpus":{"boot_vcpus":1,"max_vcpus":1,"kvm_hyperv":true}`,
	"cpus.affinity[].vcpu":      `"cpus":{"boot_vcpus":1,"max_vcpus":1,"affinity":[{"vcpu":0,"host_cpus":[0]}]}`,
	"cpus.affinity[].host_cpus": `"cpus":{"boot_vcpus":1,"max_vcpus":1,"affinity":[{"vcpu":0,"host_cpus":[0]}]}`,
	"cpus.features.amx":         `"cpus":{"boot_vcpus":1,"max_vcpus":1,"features":{"amx":true}}`,
	"cpus.nested":               `"cpus":{"boot_vcpus":1,"max_vcpus":1,"nested":false}`,
	// Vm (the default) and Off are accepted; the default is logged as not applied.
	"cpus.core_scheduling": `"cpus":{"boot_vcpus":1,"max_vcpus":1,"core_scheduling":"Vcpu"}`,
	"cpus.profile":         built, // Host is its only value

	"memory.size": built, "memory.shared": built, "memory.hugepages": built, "memory.hugepage_size": built,
	"memory.prefault": built, "memory.reserve": built, "memory.thp": built,
	"memory.mergeable":       `"memory":{"size":536870912,"mergeable":true}`,
	"memory.hotplug_method":  built, // acpi and virtio-mem
	"memory.hotplug_size":    built, // ACPI memory hotplug or the virtio-mem region
	"memory.hotplugged_size": built, // virtio-mem at boot
	"memory.zones[].id":      built, "memory.zones[].size": built, "memory.zones[].shared": built,
	"memory.zones[].hugepages": built, "memory.zones[].hugepage_size": built,
	"memory.zones[].prefault": built, "memory.zones[].reserve": built,
	"memory.zones[].file":            `"memory":{"size":0,"zones":[{"id":"z","size":536870912,"file":"/dev/shm/z"}]}`,
	"memory.zones[].host_numa_node":  `"memory":{"size":0,"zones":[{"id":"z","size":536870912,"host_numa_node":0}]}`,
	"memory.zones[].hotplug_size":    `"memory":{"size":0,"zones":[{"id":"z","size":536870912,"hotplug_size":536870912}]}`,
	"memory.zones[].hotplugged_size": `"memory":{"size":0,"zones":[{"id":"z","size":536870912,"hotplugged_size":0}]}`,
	"memory.zones[].mergeable":       `"memory":{"size":0,"zones":[{"id":"z","size":536870912,"mergeable":true}]}`,

	"payload.firmware": built, "payload.kernel": built, "payload.cmdline": built, "payload.initramfs": built,
	"payload.igvm":               `"payload":{"kernel":"/k","igvm":"/i"}`,
	"payload.host_data":          `"payload":{"kernel":"/k","host_data":"00"}`,
	"payload.fw_cfg_config.e820": `"payload":{"kernel":"/k","fw_cfg_config":{}}`, "payload.fw_cfg_config.kernel": `"payload":{"kernel":"/k","fw_cfg_config":{}}`,
	"payload.fw_cfg_config.cmdline": `"payload":{"kernel":"/k","fw_cfg_config":{}}`, "payload.fw_cfg_config.initramfs": `"payload":{"kernel":"/k","fw_cfg_config":{}}`,
	"payload.fw_cfg_config.acpi_tables":            `"payload":{"kernel":"/k","fw_cfg_config":{}}`,
	"payload.fw_cfg_config.items.item_list[].name": `"payload":{"kernel":"/k","fw_cfg_config":{}}`,
	"payload.fw_cfg_config.items.item_list[].file": `"payload":{"kernel":"/k","fw_cfg_config":{}}`,

	"rate_limit_groups[].id":                                           built, // internal/ratelimit
	"rate_limit_groups[].rate_limiter_config.bandwidth.size":           built, // internal/ratelimit
	"rate_limit_groups[].rate_limiter_config.bandwidth.one_time_burst": built, // internal/ratelimit
	"rate_limit_groups[].rate_limiter_config.bandwidth.refill_time":    built, // internal/ratelimit
	"rate_limit_groups[].rate_limiter_config.ops.size":                 built, // internal/ratelimit
	"rate_limit_groups[].rate_limiter_config.ops.one_time_burst":       built, // internal/ratelimit
	"rate_limit_groups[].rate_limiter_config.ops.refill_time":          built, // internal/ratelimit

	// Raw and qcow2 images (internal/qcow2; backing_files allows a qcow2
	// image's backing file); the other formats are refused when the image
	// is opened (virtio/blk), pci_segment != 0 when the device is placed
	// (vm/pci.go).
	"disks[].path": built, "disks[].readonly": built, "disks[].direct": built, "disks[].num_queues": built,
	"disks[].queue_size": built, "disks[].disable_io_uring": built, "disks[].disable_aio": built,
	"disks[].serial": built, "disks[].backing_files": built, "disks[].sparse": built,
	"disks[].image_type": built, "disks[].lock_granularity": built,
	"disks[].id": built, "disks[].pci_segment": built, "disks[].pci_device_id": built,
	"disks[].vhost_user": built, "disks[].vhost_socket": built,
	"disks[].rate_limit_group":                             built, // internal/ratelimit
	"disks[].queue_affinity[].queue_index":                 `"disks":[{"path":"/d","queue_affinity":[{"queue_index":0,"host_cpus":[0]}]}]`,
	"disks[].queue_affinity[].host_cpus":                   `"disks":[{"path":"/d","queue_affinity":[{"queue_index":0,"host_cpus":[0]}]}]`,
	"disks[].iommu":                                        `"disks":[{"path":"/d","iommu":true}]`,
	"disks[].rate_limiter_config.bandwidth.size":           built, // internal/ratelimit
	"disks[].rate_limiter_config.bandwidth.one_time_burst": built, // internal/ratelimit
	"disks[].rate_limiter_config.bandwidth.refill_time":    built, // internal/ratelimit
	"disks[].rate_limiter_config.ops.size":                 built, // internal/ratelimit
	"disks[].rate_limiter_config.ops.one_time_burst":       built, // internal/ratelimit
	"disks[].rate_limiter_config.ops.refill_time":          built, // internal/ratelimit

	"net[].tap": built, "net[].ip": built, "net[].mask": built, "net[].mac": built, "net[].host_mac": built,
	"net[].mtu": built, "net[].num_queues": built, "net[].queue_size": built, "net[].fds": built,
	"net[].offload_tso": built, "net[].offload_ufo": built, "net[].offload_csum": built,
	"net[].id": built, "net[].pci_segment": built, "net[].pci_device_id": built,
	"net[].vhost_user": built, "net[].vhost_socket": built, // client mode, one queue pair
	"net[].vhost_mode": `"net":[{"vhost_user":true,"vhost_socket":"/s","vhost_mode":"Server"}]`,
	"net[].iommu":      `"net":[{"iommu":true}]`,
	"net[].rate_limiter_config.bandwidth.size":           built, // internal/ratelimit, rx and tx
	"net[].rate_limiter_config.bandwidth.one_time_burst": built, // internal/ratelimit, rx and tx
	"net[].rate_limiter_config.bandwidth.refill_time":    built, // internal/ratelimit, rx and tx
	"net[].rate_limiter_config.ops.size":                 built, // internal/ratelimit, rx and tx
	"net[].rate_limiter_config.ops.one_time_burst":       built, // internal/ratelimit, rx and tx
	"net[].rate_limiter_config.ops.refill_time":          built, // internal/ratelimit, rx and tx

	"rng.src": built, "rng.id": built, "rng.pci_segment": built, "rng.pci_device_id": built,
	"rng.iommu": `"rng":{"src":"/dev/urandom","iommu":true}`,

	"balloon.size": built, "balloon.deflate_on_oom": built, "balloon.free_page_reporting": built,
	"balloon.id": built, "balloon.pci_segment": built, "balloon.pci_device_id": built,
	"balloon.iommu": `"balloon":{"size":0,"iommu":true}`,

	"serial.file": built, "serial.mode": built, "serial.socket": built,
	"console.file": built, "console.mode": built, "console.socket": built,
	"console.id": built, "console.pci_segment": built, "console.pci_device_id": built,
	"console.iommu":      `"console":{"mode":"Null","iommu":true}`,
	"debug_console.file": built, "debug_console.mode": built, "debug_console.iobase": built,

	"vsock.cid": built, "vsock.socket": built, "vsock.id": built, "vsock.pci_segment": built, "vsock.pci_device_id": built,
	"vsock.iommu": `"vsock":{"cid":3,"socket":"/v","iommu":true}`,
	"fs[].tag":    built, "fs[].socket": built, "fs[].num_queues": built, "fs[].queue_size": built,
	"fs[].id": built, "fs[].pci_segment": built, "fs[].pci_device_id": built,
	"fs[].iommu":  `"memory":{"size":536870912,"shared":true},"fs":[{"tag":"t","socket":"/s","iommu":true}]`,
	"pmem[].file": built, "pmem[].size": built, "pmem[].discard_writes": built,
	"pmem[].id": built, "pmem[].pci_segment": built, "pmem[].pci_device_id": built,
	"pmem[].iommu": `"pmem":[{"file":"/p","iommu":true}]`,

	"pvpanic":  `"pvpanic":true`,
	"iommu":    `"iommu":true`,
	"watchdog": `"watchdog":true`,
	"rtc.id":   `"rtc":{}`, "rtc.iommu": `"rtc":{}`, "rtc.pci_segment": `"rtc":{}`, "rtc.pci_device_id": `"rtc":{}`,
	"tpm.socket": `"tpm":{"socket":"/t"}`,
	// Applied by the control loop (vmm.Options.Confine, internal/landlock).
	"landlock_enable": built, "landlock_rules[].path": built, "landlock_rules[].access": built,
	"pci_segments[].pci_segment": built, "pci_segments[].mmio32_aperture_weight": built,
	"pci_segments[].mmio64_aperture_weight": built,

	"platform.num_pci_segments":         built,
	"platform.iommu_segments":           `"platform":{"iommu_segments":[0]}`,
	"platform.iommu_address_width_bits": `"platform":{"iommu_address_width_bits":48}`,
	"platform.system_serial_number":     `"platform":{"system_serial_number":"s"}`,
	"platform.system_uuid":              `"platform":{"system_uuid":"u"}`,
	"platform.oem_strings":              `"platform":{"oem_strings":["o"]}`,
	"platform.system_manufacturer":      `"platform":{"system_manufacturer":"m"}`,
	"platform.system_product_name":      `"platform":{"system_product_name":"p"}`,
	"platform.system_version":           `"platform":{"system_version":"v"}`,
	"platform.system_family":            `"platform":{"system_family":"f"}`,
	"platform.system_sku_number":        `"platform":{"system_sku_number":"k"}`,
	"platform.chassis_asset_tag":        `"platform":{"chassis_asset_tag":"a"}`,
	"platform.tdx":                      `"platform":{"tdx":true}`,
	"platform.sev_snp":                  `"platform":{"sev_snp":true}`,
	"platform.iommufd":                  `"platform":{"iommufd":true}`,
	"platform.iommufd_fd":               `"platform":{"iommufd_fd":3}`,
	"platform.vfio_p2p_dma":             `"platform":{"vfio_p2p_dma":false}`,
}

// sectionVerdicts covers whole device lists by their first field's
// prefix: any entry at all is refused.
var sectionVerdicts = map[string]string{
	"generic_vhost_user[].": `"generic_vhost_user":[{"socket":"/s","queue_sizes":[256],"device_type":1}]`,
	"devices[].":            `"devices":[{"path":"/sys/bus/pci/devices/0000:00:01.0"}]`,
	"user_devices[].":       `"user_devices":[{"socket":"/s"}]`,
	"vdpa[].":               `"vdpa":[{"path":"/dev/vhost-vdpa-0"}]`,
	"numa[].":               `"numa":[{"guest_numa_id":0}]`,
}

// leafPaths lists t's leaf fields by JSON path; slices as "name[]",
// structs and pointers to structs descended into.
func leafPaths(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous {
			out = append(out, leafPaths(f.Type, prefix)...)
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		path := prefix + name
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct:
			out = append(out, leafPaths(ft, path+".")...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			out = append(out, leafPaths(ft.Elem(), path+"[].")...)
		default:
			out = append(out, path)
		}
	}
	return out
}

func verdict(path string) (string, bool) {
	if v, ok := fieldVerdicts[path]; ok {
		return v, true
	}
	for prefix, v := range sectionVerdicts {
		if strings.HasPrefix(path, prefix) {
			return v, true
		}
	}
	return "", false
}

// TestEveryConfigFieldIsBuiltOrRefused walks every field of VmConfig: each
// has a verdict, and setting any refused one makes boot fail before
// anything is built, with ErrUnsupported and a message naming the section.
func TestEveryConfigFieldIsBuiltOrRefused(t *testing.T) {
	paths := leafPaths(reflect.TypeFor[config.VmConfig](), "")
	var refused int
	for _, p := range paths {
		v, ok := verdict(p)
		if !ok {
			t.Errorf("config field %s has no verdict: build it, or refuse it in refuseUnbuilt, and say which in fieldVerdicts", p)
			continue
		}
		if v == built {
			continue
		}
		refused++
		body := `{"payload":{"kernel":"/k"},` + v + `}`
		cfg, err := config.Decode([]byte(body))
		if err != nil {
			t.Errorf("%s: decoding %s: %v", p, body, err)
			continue
		}
		err = refuseUnbuilt(cfg)
		section, _, _ := strings.Cut(strings.TrimSuffix(p, "[]"), "[]")
		section, _, _ = strings.Cut(section, ".")
		if !errors.Is(err, vmm.ErrUnsupported) || !strings.Contains(err.Error(), section) || !strings.HasSuffix(err.Error(), "is not supported by this build") {
			t.Errorf("%s set by %s: refuseUnbuilt = %v, want a 'not supported by this build' error naming %s", p, v, err, section)
		}
	}
	for p := range fieldVerdicts {
		if !slices.Contains(paths, p) {
			t.Errorf("fieldVerdicts has %s, which VmConfig does not", p)
		}
	}
	t.Logf("%d config fields, %d refused when set", len(paths), refused)
}

// TestDefaultConfigIsBuilt: upstream's defaults (an empty VmConfig body
// with a kernel), and a config with every built device, pass.
func TestDefaultConfigIsBuilt(t *testing.T) {
	for _, body := range []string{
		`{"payload":{"kernel":"/k"}}`,
		`{"cpus":{"boot_vcpus":2,"max_vcpus":2,"topology":{"threads_per_core":1,"cores_per_die":2,"dies_per_package":1,"packages":1},"core_scheduling":"Off"},
		  "memory":{"size":0,"zones":[{"id":"z","size":536870912,"shared":true}]},"payload":{"kernel":"/k","initramfs":"/i","cmdline":"c"},
		  "disks":[{"path":"/d","readonly":true,"serial":"s"}],"net":[{"tap":"t","mac":"52:54:00:00:00:01","mtu":1500}],
		  "serial":{"mode":"Pty"},"console":{"mode":"Off"},"debug_console":{"mode":"Null"},"platform":{"num_pci_segments":1}}`,
	} {
		cfg, err := config.Decode([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if err := refuseUnbuilt(cfg); err != nil {
			t.Errorf("%s: %v", body, err)
		}
	}
}

// TestHotplugSizeBesideZonesRefused: hotplug_size is built for the global
// memory, but beside zones no resize could ever use the window, so it is
// refused rather than accepted and dropped.
func TestHotplugSizeBesideZonesRefused(t *testing.T) {
	cfg, err := config.Decode([]byte(`{"payload":{"kernel":"/k"},
		"memory":{"size":0,"hotplug_size":1073741824,"zones":[{"id":"z","size":536870912}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := refuseUnbuilt(cfg); !errors.Is(err, vmm.ErrUnsupported) || !strings.Contains(err.Error(), "memory.hotplug_size") {
		t.Fatalf("refuseUnbuilt = %v", err)
	}
}

// TestVhostUserNetRefusals: what vhost-user devices do not build is
// refused by name (the walker above sets one field at a time): net
// multiqueue, MTU, server mode, and host-side or image fields the back
// end owns.
func TestVhostUserNetRefusals(t *testing.T) {
	for _, c := range []struct{ body, want string }{
		{`"net":[{"vhost_user":true,"vhost_socket":"/s","num_queues":4}]`, "Multiqueue vhost-user-net"},
		{`"net":[{"vhost_user":true,"vhost_socket":"/s","mtu":1400}]`, "An MTU for vhost-user-net"},
		{`"net":[{"vhost_user":true,"vhost_socket":"/s","vhost_mode":"Server"}]`, "server mode"},
		{`"net":[{"vhost_user":true,"vhost_socket":"/s","tap":"t0"}]`, "beside vhost_user (net[0]"},
		{`"net":[{"vhost_user":true,"vhost_socket":"/s","ip":"10.0.0.1","mask":"255.255.255.0"}]`, "beside vhost_user (net[0]"},
		{`"disks":[{"vhost_user":true,"vhost_socket":"/s","readonly":true}]`, "beside vhost_user (disks[0]"},
		{`"disks":[{"vhost_user":true,"vhost_socket":"/s","serial":"x"}]`, "beside vhost_user (disks[0]"},
	} {
		cfg, err := config.Decode([]byte(`{"payload":{"kernel":"/k"},` + c.body + `}`))
		if err != nil {
			t.Fatal(err)
		}
		if err := refuseUnbuilt(cfg); !errors.Is(err, vmm.ErrUnsupported) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.body, err)
		}
	}
	cfg, _ := config.Decode([]byte(`{"payload":{"kernel":"/k"},"net":[{"vhost_user":true,"vhost_socket":"/s"}]}`))
	if err := refuseUnbuilt(cfg); err != nil {
		t.Errorf("one queue pair in client mode refused: %v", err)
	}
}
