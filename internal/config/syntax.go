package config

// Option syntax strings, as upstream's SYNTAX constants (vmm/src/config.rs
// and vm_config.rs): the help text of both the nimbus option and the
// matching nimbus-remote add-* argument, so the two cannot drift apart.
const (
	// BalloonSyntax is the syntax of --balloon.
	BalloonSyntax = `Balloon parameters "size=<balloon_size>,deflate_on_oom=on|off,free_page_reporting=on|off,iommu=on|off,id=<device_id>,pci_segment=<segment_id>,pci_device_id=<pci_slot>"`
	// DeviceSyntax is the syntax of --device.
	DeviceSyntax = `Direct device assignment parameters "path=<device_path>|fd=<fd>,iommu=on|off,id=<device_id>,pci_segment=<segment_id>,pci_device_id=<pci_slot>,x_nv_gpudirect_clique=<clique_id>,x_exclude_mmap_bars=<list_of_bar_indices>"`
	// DiskSyntax is the syntax of --disk.
	DiskSyntax = `Disk parameters "path=<disk_image_path>,readonly=on|off,direct=on|off,iommu=on|off,num_queues=<number_of_queues>,queue_size=<size_of_each_queue>,vhost_user=on|off,socket=<vhost_user_socket_path>,bw_size=<bytes>,bw_one_time_burst=<bytes>,bw_refill_time=<ms>,ops_size=<io_ops>,ops_one_time_burst=<io_ops>,ops_refill_time=<ms>,id=<device_id>,pci_segment=<segment_id>,pci_device_id=<pci_slot>,rate_limit_group=<group_id>,queue_affinity=<list_of_queue_indices_with_their_associated_cpuset>,serial=<serial_number>,backing_files=on|off,sparse=on|off,image_type=raw|qcow2|vhd|vhdx|vmdk,lock_granularity=byte-range|full"`
	// FsSyntax is the syntax of --fs.
	FsSyntax = `virtio-fs parameters "tag=<tag_name>,socket=<socket_path>,num_queues=<number_of_queues>,queue_size=<size_of_each_queue>,id=<device_id>,pci_segment=<segment_id>,pci_device_id=<pci_slot>"`
	// GenericVhostUserSyntax is the syntax of --generic-vhost-user.
	GenericVhostUserSyntax = `Generic vhost-user device parameters "device_type=<name|number>,socket=<socket_path>,queue_sizes=<list_of_queue_sizes>,id=<device_id>,pci_segment=<segment_id>,pci_device_id=<pci_slot>"`
	// LandlockRulesSyntax is the syntax of --landlock-rules.
	LandlockRulesSyntax = `Landlock parameters "path=<path/to/{file/dir}>,access=[rw]"`
	// NetSyntax is the syntax of --net.
	NetSyntax = `Network parameters "tap=<if_name>,ip=<ip_addr>,mask=<net_mask>,mac=<mac_addr>,host_mac=<mac_addr>,mtu=<mtu>,fd=<fd1,fd2...>,iommu=on|off,num_queues=<number_of_queues>,queue_size=<size_of_each_queue>,id=<device_id>,vhost_user=<vhost_user_enable>,socket=<vhost_user_socket_path>,vhost_mode=client|server,bw_size=<bytes>,bw_one_time_burst=<bytes>,bw_refill_time=<ms>,ops_size=<io_ops>,ops_one_time_burst=<io_ops>,ops_refill_time=<ms>,pci_segment=<segment_id>,pci_device_id=<pci_slot>,offload_tso=on|off,offload_ufo=on|off,offload_csum=on|off"`
	// NumaSyntax is the syntax of --numa.
	NumaSyntax = `Settings related to a given NUMA node "guest_numa_id=<node_id>,cpus=<cpus_id>,distances=<list_of_distances_to_destination_nodes>,memory_zones=<list_of_memory_zones>,pci_segments=<list_of_pci_segments>,device_id=<device_id>"`
	// PciSegmentSyntax is the syntax of --pci-segment.
	PciSegmentSyntax = `PCI Segment parameters "pci_segment=<segment_id>,mmio32_aperture_weight=<scale>,mmio64_aperture_weight=<scale>"`
	// PmemSyntax is the syntax of --pmem.
	PmemSyntax = `Persistent memory parameters "file=<backing_file_path>,size=<persistent_memory_size>,iommu=on|off,discard_writes=on|off,id=<device_id>,pci_segment=<segment_id>,pci_device_id=<pci_slot>"`
	// RateLimitGroupSyntax is the syntax of --rate-limit-group.
	RateLimitGroupSyntax = `Rate Limit Group parameters "bw_size=<bytes>,bw_one_time_burst=<bytes>,bw_refill_time=<ms>,ops_size=<io_ops>,ops_one_time_burst=<io_ops>,ops_refill_time=<ms>,id=<device_id>"`
	// RestoreSyntax is the syntax of --restore.
	RestoreSyntax = `Restore from a VM snapshot. Restore parameters "source_url=<source_url>,prefault=on|off,memory_restore_mode=copy|ondemand,net_fds=<list_of_net_ids_with_their_associated_fds>,vfio_fds=<list_of_vfio_ids_with_their_fd>,iommufd_fd=<fd>,resume=true|false,zone_updates=<list_of_zone_ids_with_host_numa_node>"`
	// TpmSyntax is the syntax of --tpm.
	TpmSyntax = `TPM device "(UNIX Domain Socket from swtpm) socket=</path/to/a/socket>"`
	// UserDeviceSyntax is the syntax of --user-device.
	UserDeviceSyntax = `Userspace device "socket=<socket_path>,id=<device_id>,pci_segment=<segment_id>,pci_device_id=<pci_slot>"`
	// VdpaSyntax is the syntax of --vdpa.
	VdpaSyntax = `vDPA device "path=<device_path>,num_queues=<number_of_queues>,iommu=on|off,id=<device_id>,pci_segment=<segment_id>,pci_device_id=<pci_slot>"`
	// VsockSyntax is the syntax of --vsock.
	VsockSyntax = `Virtio VSOCK parameters "cid=<context_id>,socket=<socket_path>,iommu=on|off,id=<device_id>,pci_segment=<segment_id>,pci_device_id=<pci_slot>"`
)
