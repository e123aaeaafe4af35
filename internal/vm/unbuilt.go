package vm

import (
	"fmt"
	"slices"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// unsupportedError is the last entry of a refusal's chain: its text names
// the config section, and it classifies as vmm.ErrUnsupported.
type unsupportedError struct{ msg string }

func (e *unsupportedError) Error() string        { return e.msg }
func (e *unsupportedError) Is(target error) bool { return target == vmm.ErrUnsupported }

func notBuilt(format string, args ...any) error {
	return &unsupportedError{msg: fmt.Sprintf(format, args...) + " is not supported by this build"}
}

// refuseUnbuilt refuses, before anything is built, every config section
// this machine would not build: a client told "no" at boot is served
// better than one that waits out its timeout for a device that never
// comes. TestEveryConfigFieldIsBuiltOrRefused keeps the list complete.
// Sections refused further down (vhd/vhdx/vmdk images, pci_segment != 0) are
// refused where they are built.
func refuseUnbuilt(cfg *config.VmConfig) error {
	c := &cfg.Cpus
	switch {
	case c.KvmHyperv:
		return notBuilt("Hyper-V emulation (cpus.kvm_hyperv)")
	case len(c.Affinity) > 0:
		return notBuilt("vCPU affinity (cpus.affinity)")
	case c.Features.AMX:
		return notBuilt("AMX (cpus.features.amx)")
	case !c.Nested:
		return notBuilt("Hiding nested virtualisation (cpus.nested=false)")
	case c.CoreScheduling != config.CoreSchedulingVM && c.CoreScheduling != config.CoreSchedulingOff:
		return notBuilt("Core scheduling %q (cpus.core_scheduling)", c.CoreScheduling)
	}
	if err := refuseMemory(&cfg.Memory); err != nil {
		return err
	}
	if p := cfg.Payload; p != nil {
		switch {
		case p.Igvm != "":
			return notBuilt("IGVM payloads (payload.igvm)")
		case p.HostData != "":
			return notBuilt("Confidential host data (payload.host_data)")
		case p.FwCfgConfig != nil:
			return notBuilt("fw_cfg (payload.fw_cfg_config)")
		}
	}
	for i := range cfg.Disks {
		if err := refuseDisk(fmt.Sprintf("disks[%d]", i), &cfg.Disks[i]); err != nil {
			return err
		}
	}
	for i := range cfg.Net {
		if err := refuseNet(fmt.Sprintf("net[%d]", i), &cfg.Net[i]); err != nil {
			return err
		}
	}
	for i := range cfg.Fs {
		if err := refuseFs(fmt.Sprintf("fs[%d]", i), &cfg.Fs[i]); err != nil {
			return err
		}
	}
	for i := range cfg.Pmem {
		if err := refusePmem(fmt.Sprintf("pmem[%d]", i), &cfg.Pmem[i]); err != nil {
			return err
		}
	}
	if cfg.Balloon != nil && cfg.Balloon.IOMMU {
		return notBuilt("The virtual IOMMU (balloon.iommu)")
	}
	if cfg.Vsock != nil {
		if err := refuseVsock(cfg.Vsock); err != nil {
			return err
		}
	}
	if cfg.Rng.IOMMU || cfg.Console.IOMMU {
		return notBuilt("The virtual IOMMU (rng.iommu, console.iommu)")
	}
	switch {
	case len(cfg.GenericVhostUser) > 0:
		return notBuilt("Generic vhost-user devices (generic_vhost_user)")
	case len(cfg.Devices) > 0:
		return notBuilt("VFIO devices (devices)")
	case len(cfg.UserDevices) > 0:
		return notBuilt("vfio-user devices (user_devices)")
	case len(cfg.Vdpa) > 0:
		return notBuilt("vDPA devices (vdpa)")
	case cfg.Pvpanic:
		return notBuilt("The pvpanic device (pvpanic)")
	case cfg.IOMMU:
		return notBuilt("The virtual IOMMU (iommu)")
	case len(cfg.Numa) > 0:
		return notBuilt("Guest NUMA nodes (numa)")
	case cfg.Watchdog:
		return notBuilt("The watchdog device (watchdog)")
	case cfg.Rtc != nil:
		return notBuilt("virtio-rtc (rtc)")
	case cfg.Tpm != nil:
		return notBuilt("The TPM (tpm)")
	}
	return refusePlatform(cfg.Platform)
}

// refuseDisk, refuseNet, refuseFs, refusePmem and refuseVsock are refuseUnbuilt
// for one device, also run on hot add; f names the device in the text.
func refuseDisk(f string, d *config.DiskConfig) error {
	switch {
	case d.VhostUser && (d.Readonly || d.Direct || d.Serial != ""):
		// The back end owns the image: these would be dropped.
		return notBuilt("readonly, direct and serial beside vhost_user (%s; the back end decides them)", f)
	case len(d.QueueAffinity) > 0:
		return notBuilt("Virtqueue affinity (%s.queue_affinity)", f)
	case d.IOMMU:
		return notBuilt("The virtual IOMMU (%s.iommu)", f)
	}
	return nil
}

func refuseNet(f string, n *config.NetConfig) error {
	switch {
	case n.VhostUser && n.VhostMode == config.VhostServer:
		return notBuilt("vhost-user-net in server mode (%s.vhost_mode=Server)", f)
	case n.VhostUser && n.NumQueues > 2:
		return notBuilt("Multiqueue vhost-user-net (%s.num_queues=%d)", f, n.NumQueues)
	case n.VhostUser && n.MTU != nil:
		return notBuilt("An MTU for vhost-user-net (%s.mtu)", f)
	case n.VhostUser && (n.Tap != "" || len(n.Fds) > 0 || n.HostMAC != "" || n.IP != "" || n.Mask != ""):
		// The back end owns the host side: these would be dropped.
		return notBuilt("tap, fds, host_mac, ip and mask beside vhost_user (%s; the back end owns the host side)", f)
	case n.VhostUser && n.RateLimiterConfig != nil:
		// The back end moves the frames: nothing here could pace them.
		return notBuilt("Rate limiting a vhost-user-net device (%s.rate_limiter_config)", f)
	case n.IOMMU:
		return notBuilt("The virtual IOMMU (%s.iommu)", f)
	}
	return nil
}

func refuseFs(f string, c *config.FsConfig) error {
	if c.IOMMU {
		return notBuilt("The virtual IOMMU (%s.iommu)", f)
	}
	return nil
}

func refusePmem(f string, p *config.PmemConfig) error {
	if p.IOMMU {
		return notBuilt("The virtual IOMMU (%s.iommu)", f)
	}
	return nil
}

func refuseVsock(v *config.VsockConfig) error {
	if v.IOMMU {
		return notBuilt("The virtual IOMMU (vsock.iommu)")
	}
	return nil
}

func refuseMemory(m *config.MemoryConfig) error {
	switch {
	case m.Mergeable:
		return notBuilt("Mergeable (KSM) memory (memory.mergeable)")
	case len(m.Zones) > 0 && m.HotplugSize != nil:
		// Upstream builds the window and then refuses every resize of a
		// VM with zones; a window nothing can use is refused here.
		return notBuilt("Memory hotplug beside memory zones (memory.hotplug_size)")
	}
	for i, z := range m.Zones {
		f := fmt.Sprintf("memory.zones[%d]", i)
		switch {
		case z.File != "":
			return notBuilt("File-backed memory zones (%s.file)", f)
		case z.HostNumaNode != nil:
			return notBuilt("Host NUMA placement (%s.host_numa_node)", f)
		case z.HotplugSize != nil || z.HotpluggedSize != nil:
			return notBuilt("Memory zone hotplug (%s.hotplug_size)", f)
		case z.Mergeable:
			return notBuilt("Mergeable (KSM) memory (%s.mergeable)", f)
		}
	}
	return nil
}

func refusePlatform(p *config.PlatformConfig) error {
	if p == nil {
		return nil
	}
	d := config.DefaultPlatformConfig()
	smbios := []string{p.SystemSerialNumber, p.SystemUUID, p.SystemManufacturer, p.SystemProductName,
		p.SystemVersion, p.SystemFamily, p.SystemSkuNumber, p.ChassisAssetTag}
	switch {
	case len(p.IommuSegments) > 0 || p.IommuAddressWidthBits != d.IommuAddressWidthBits:
		return notBuilt("The virtual IOMMU (platform.iommu_segments, iommu_address_width_bits)")
	case len(p.OemStrings) > 0 || slices.ContainsFunc(smbios, func(s string) bool { return s != "" }):
		return notBuilt("SMBIOS tables (platform.system_*, oem_strings, chassis_asset_tag)")
	case p.Tdx:
		return notBuilt("Intel TDX (platform.tdx)")
	case p.SevSnp:
		return notBuilt("AMD SEV-SNP (platform.sev_snp)")
	case p.Iommufd || p.IommufdFd != nil || p.VfioP2PDma != d.VfioP2PDma:
		return notBuilt("VFIO platform options (platform.iommufd, iommufd_fd, vfio_p2p_dma)")
	}
	return nil
}
