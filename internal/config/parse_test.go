package config

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseOptionsToJSON(t *testing.T) {
	cases := []struct {
		name string
		got  func() (any, error)
		want string
	}{
		{"cpus", func() (any, error) { return ParseCpus("boot=2,affinity=[0@[0,2],1@[1,3]],features=amx") },
			`{"boot_vcpus":2,"max_vcpus":2,"kvm_hyperv":false,"max_phys_bits":46,"affinity":[{"vcpu":0,"host_cpus":[0,2]},{"vcpu":1,"host_cpus":[1,3]}],"features":{"amx":true},"nested":true,"core_scheduling":"Vm","profile":"Host"}`},
		{"cpus topology", func() (any, error) { return ParseCpus("boot=8,topology=2:2:1:2") },
			`{"boot_vcpus":8,"max_vcpus":8,"topology":{"threads_per_core":2,"cores_per_die":2,"dies_per_package":1,"packages":2},"kvm_hyperv":false,"max_phys_bits":46,"features":{"amx":false},"nested":true,"core_scheduling":"Vm","profile":"Host"}`},
		{"memory", func() (any, error) { return ParseMemory("size=1G,hotplug_method=virtio-mem,hotplug_size=1G") },
			`{"size":1073741824,"mergeable":false,"hotplug_method":"VirtioMem","hotplug_size":1073741824,"shared":false,"hugepages":false,"prefault":false,"reserve":false,"thp":true}`},
		{"disk", func() (any, error) { return ParseDisk("path=/x") },
			`{"path":"/x","readonly":false,"direct":false,"num_queues":1,"queue_size":128,"vhost_user":false,"disable_io_uring":false,"disable_aio":false,"backing_files":false,"sparse":true,"image_type":"Unknown","lock_granularity":"ByteRange","pci_segment":0}`},
		{"disk full", func() (any, error) {
			return ParseDisk("path=/d,readonly=on,image_type=raw,bw_size=1000,bw_refill_time=100,id=d0,pci_segment=1,queue_affinity=[0@[1]],lock_granularity=full,serial=S,iommu=on")
		},
			`{"path":"/d","readonly":true,"direct":false,"num_queues":1,"queue_size":128,"vhost_user":false,"rate_limiter_config":{"bandwidth":{"size":1000,"one_time_burst":0,"refill_time":100}},"disable_io_uring":false,"disable_aio":false,"serial":"S","queue_affinity":[{"queue_index":0,"host_cpus":[1]}],"backing_files":false,"sparse":true,"image_type":"Raw","lock_granularity":"Full","id":"d0","iommu":true,"pci_segment":1}`},
		{"net", func() (any, error) {
			return ParseNet("tap=t0,mac=12:34:56:78:90:01,ip=192.168.1.1,mask=255.255.255.0,mtu=1500")
		},
			`{"tap":"t0","ip":"192.168.1.1","mask":"255.255.255.0","mac":"12:34:56:78:90:01","mtu":1500,"num_queues":2,"queue_size":256,"vhost_user":false,"vhost_mode":"Client","offload_tso":true,"offload_ufo":true,"offload_csum":true,"pci_segment":0}`},
		{"rng", func() (any, error) { return ParseRng("src=/dev/random") }, `{"src":"/dev/random","pci_segment":0}`},
		{"balloon", func() (any, error) { return ParseBalloon("size=1G,free_page_reporting=on") },
			`{"size":1073741824,"deflate_on_oom":false,"free_page_reporting":true,"pci_segment":0}`},
		{"fs", func() (any, error) { return ParseFs("tag=myfs,socket=/tmp/sock") },
			`{"tag":"myfs","socket":"/tmp/sock","num_queues":1,"queue_size":1024,"pci_segment":0}`},
		{"pmem", func() (any, error) { return ParsePmem("file=/p,size=128M") }, `{"file":"/p","size":134217728,"discard_writes":false,"pci_segment":0}`},
		{"serial", func() (any, error) { return ParseSerial("file=/tmp/s") }, `{"file":"/tmp/s","mode":"File"}`},
		{"console", func() (any, error) { return ParseConsole("tty") }, `{"mode":"Tty","pci_segment":0}`},
		{"debug console", func() (any, error) { return ParseDebugConsole("tty,iobase=0x3f8") }, `{"mode":"Tty","iobase":1016}`},
		{"device", func() (any, error) { return ParseDevice("path=/sys/bus/pci/devices/0000:01:00.0,iommu=on") },
			`{"path":"/sys/bus/pci/devices/0000:01:00.0","x_exclude_mmap_bars":[],"iommu":true,"pci_segment":0}`},
		{"vsock", func() (any, error) { return ParseVsock("cid=3,socket=/v") }, `{"cid":3,"socket":"/v","pci_segment":0}`},
		{"numa", func() (any, error) {
			return ParseNuma("guest_numa_id=0,cpus=[0-3],distances=[1@15,2@20],memory_zones=[mem0]")
		},
			`{"guest_numa_id":0,"cpus":[0,1,2,3],"distances":[{"destination":1,"distance":15},{"destination":2,"distance":20}],"memory_zones":["mem0"]}`},
		{"platform", func() (any, error) { return ParsePlatform("num_pci_segments=2,iommu_segments=[1],uuid=u") },
			`{"num_pci_segments":2,"iommu_segments":[1],"iommu_address_width_bits":64,"system_uuid":"u","iommufd":false,"vfio_p2p_dma":true}`},
		{"rate group", func() (any, error) { return ParseRateLimitGroup("id=g0,ops_size=10,ops_refill_time=5") },
			`{"id":"g0","rate_limiter_config":{"ops":{"size":10,"one_time_burst":0,"refill_time":5}}}`},
		{"gvu", func() (any, error) { return ParseGenericVhostUser("device_type=fs,socket=/s,queue_sizes=[1024,1024]") },
			`{"socket":"/s","queue_sizes":[1024,1024],"device_type":26,"pci_segment":0}`},
		{"restore", func() (any, error) {
			return ParseRestore("source_url=file:///snap,prefault=on,net_fds=[net0@[3,4]],resume=true,memory_restore_mode=ondemand")
		},
			`{"source_url":"file:///snap","prefault":true,"memory_restore_mode":"OnDemand","net_fds":[{"id":"net0","num_fds":2,"fds":[3,4]}],"resume":true,"zone_updates":[]}`},
		{"send", func() (any, error) { return ParseSendMigration("destination_url=unix:/s,local=on") },
			`{"destination_url":"unix:/s","local":true,"preserve_source":false,"downtime_ms":300,"timeout_s":3600,"timeout_strategy":"Cancel","connections":1,"memory_mode":"Precopy"}`},
		{"receive", func() (any, error) { return ParseReceiveMigration("receiver_url=tcp:0.0.0.0:6000") },
			`{"receiver_url":"tcp:0.0.0.0:6000","memory_mode":"Precopy","zone_updates":[]}`},
	}
	for _, tc := range cases {
		v, err := tc.got()
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got := mustJSON(t, v); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
	}
}

func TestParseOptionErrors(t *testing.T) {
	cases := []struct {
		name string
		err  func() error
		want string
	}{
		{"cpus boot=x", func() error { _, err := ParseCpus("boot=x"); return err }, `error parsing --cpus: invalid value "x" for boot`},
		{"memory size=12Q", func() error { _, err := ParseMemory("size=12Q"); return err }, `error parsing --memory: invalid value "12Q" for size`},
		{"disk bogus", func() error { _, err := ParseDisk("path=/a,bogus=1"); return err }, `error parsing --disk: unknown option "bogus"`},
		{"topology", func() error { _, err := ParseCpus("boot=8,topology=2:2:1"); return err }, `invalid value "2:2:1" for topology`},
		{"fs tag", func() error { _, err := ParseFs("socket=/s"); return err }, "error parsing --fs: tag missing"},
		{"vsock cid", func() error { _, err := ParseVsock("socket=/s"); return err }, "error parsing --vsock: cid missing"},
		{"console", func() error { _, err := ParseConsole(""); return err }, "invalid console mode given"},
		{"debug iobase", func() error { _, err := ParseDebugConsole("tty,iobase=e9"); return err }, "`0x` prefix is missing: e9"},
		{"features", func() error { _, err := ParseCpus("features=[avx]"); return err }, `invalid value "avx" for features`},
		{"restore", func() error { _, err := ParseRestore("prefault=on"); return err }, "source_url missing"},
		{"image type", func() error { _, err := ParseDisk("path=/a,image_type=iso"); return err }, `invalid value "iso" for image_type`},
	}
	for _, tc := range cases {
		err := tc.err()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
			continue
		}
		if !errors.Is(err, ErrParse) {
			t.Errorf("%s: %v does not wrap ErrParse", tc.name, err)
		}
	}
}

func TestParseNetGeneratesMAC(t *testing.T) {
	n, err := ParseNet("tap=,mac=,ip=,mask=")
	if err != nil {
		t.Fatal(err)
	}
	if n.Tap != "" || n.IP != "" || len(n.MAC) != 17 {
		t.Errorf("got %+v", n)
	}
}
