package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestDecodeMinimalBodyDefaults(t *testing.T) {
	c, err := Decode([]byte(`{"cpus":{"boot_vcpus":4,"max_vcpus":4},
	 "payload":{"kernel":"/k","cmdline":"console=ttyS0"},
	 "disks":[{"path":"/d"}],
	 "net":[{"ip":"192.168.10.10","mask":"255.255.255.0","mac":"12:34:56:78:90:01"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"cpus":{"boot_vcpus":4,"max_vcpus":4,"kvm_hyperv":false,"max_phys_bits":46,"features":{"amx":false},"nested":true,"core_scheduling":"Vm","profile":"Host"},` +
		`"memory":{"size":536870912,"mergeable":false,"hotplug_method":"Acpi","shared":false,"hugepages":false,"prefault":false,"reserve":false,"thp":true},` +
		`"payload":{"kernel":"/k","cmdline":"console=ttyS0"},` +
		`"disks":[{"path":"/d","readonly":false,"direct":false,"num_queues":1,"queue_size":128,"vhost_user":false,"disable_io_uring":false,"disable_aio":false,"backing_files":false,"sparse":true,"image_type":"Unknown","lock_granularity":"ByteRange","pci_segment":0}],` +
		`"net":[{"ip":"192.168.10.10","mask":"255.255.255.0","mac":"12:34:56:78:90:01","num_queues":2,"queue_size":256,"vhost_user":false,"vhost_mode":"Client","offload_tso":true,"offload_ufo":true,"offload_csum":true,"pci_segment":0}],` +
		`"rng":{"src":"/dev/urandom","pci_segment":0},` +
		`"serial":{"mode":"Null"},"console":{"mode":"Tty","pci_segment":0},"debug_console":{"mode":"Off","iobase":233},` +
		`"pvpanic":false,"iommu":false,"watchdog":false,"landlock_enable":false}`
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestDecodeEmptyObject(t *testing.T) {
	c, err := Decode([]byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cpus.BootVcpus != 1 || c.Cpus.MaxVcpus != 1 || c.Memory.Size != 512<<20 || c.Rng.Src != "/dev/urandom" {
		t.Errorf("defaults not applied: %+v", c)
	}
	if c.Payload != nil || c.Disks != nil {
		t.Errorf("absent optionals must stay nil")
	}
}

func TestAddDiskBodyRoundTrips(t *testing.T) {
	// ch-remote's add-disk path=/x body (reference §5.1).
	body := `{"path":"/x","readonly":false,"direct":false,"num_queues":1,"queue_size":128,"vhost_user":false,"disable_io_uring":false,"disable_aio":false,"backing_files":false,"sparse":true,"image_type":"Unknown","lock_granularity":"ByteRange","pci_segment":0}`
	d, err := DecodeBody[DiskConfig]([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(d)
	if string(out) != body {
		t.Errorf("round trip:\n got %s\nwant %s", out, body)
	}
	// A bare body gets the same defaults.
	d2, err := DecodeBody[DiskConfig]([]byte(`{"path":"/x"}`))
	if err != nil {
		t.Fatal(err)
	}
	out2, _ := json.Marshal(d2)
	if string(out2) != body {
		t.Errorf("bare body:\n got %s\nwant %s", out2, body)
	}
}

func TestDecodeErrors(t *testing.T) {
	cases := []struct{ body, want string }{
		{`{"cpus":{"boot_vcpus":1}}`, "missing field `max_vcpus`"},
		{`{"memory":{}}`, "missing field `size`"},
		{`{"serial":{"mode":"Bogus"}}`, "unknown variant `Bogus`"},
		{`{"disks":[{"rate_limiter_config":{"bandwidth":{"size":1,"refill_time":1},"x":1}}]}`, "unknown field `x`"},
		{`{"cpus":{"boot_vcpus":-1,"max_vcpus":1}}`, "cannot unmarshal"},
		{`{"fs":[{"tag":"t"}]}`, "missing field `socket`"},
		{`not json`, "invalid character"},
		{``, "unexpected end"},
		{`{"disks":[{"path":"/a"}]} x`, "invalid character"},
	}
	for _, tc := range cases {
		_, err := Decode([]byte(tc.body))
		if err == nil {
			t.Errorf("%s: no error", tc.body)
			continue
		}
		if !errors.Is(err, ErrJSON) {
			t.Errorf("%s: %v does not wrap ErrJSON", tc.body, err)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q lacks %q", tc.body, err, tc.want)
		}
	}
}

func TestDecodeNullsAndUnknownFields(t *testing.T) {
	c, err := Decode([]byte(`{"payload":null,"disks":null,"sgx_epc":[{"id":"a"}],"balloon":null,"rng":null,"memory":{"size":1073741824,"hotplug_size":null}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Payload != nil || c.Disks != nil || c.Balloon != nil || c.Memory.HotplugSize != nil {
		t.Errorf("nulls must decode as absent: %+v", c)
	}
	if c.Rng.Src != "/dev/urandom" || c.Memory.Size != 1<<30 || !c.Memory.Thp {
		t.Errorf("defaults lost: %+v", c)
	}
}

func TestNetDecodeFillsMACAndInvalidatesFds(t *testing.T) {
	n, err := DecodeBody[NetConfig]([]byte(`{"tap":"t0","fds":[5,6],"num_queues":4}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(n.MAC) != 17 {
		t.Fatalf("no MAC generated: %q", n.MAC)
	}
	var first byte
	if _, err := fmtSscanHex(n.MAC[:2], &first); err != nil || first&1 != 0 || first&2 == 0 {
		t.Errorf("MAC %s not unicast locally administered", n.MAC)
	}
	if len(n.Fds) != 2 || n.Fds[0] != -1 || n.Fds[1] != -1 {
		t.Errorf("fds = %v, want [-1 -1]", n.Fds)
	}
}

func TestPlatformAliasesAndDefaults(t *testing.T) {
	p, err := DecodeBody[PlatformConfig]([]byte(`{"serial_number":"S1","uuid":"U1","num_pci_segments":2}`))
	if err != nil {
		t.Fatal(err)
	}
	if p.SystemSerialNumber != "S1" || p.SystemUUID != "U1" || p.NumPciSegments != 2 || p.IommuAddressWidthBits != 64 || !p.VfioP2PDma {
		t.Errorf("got %+v", p)
	}
}

func TestMigrationDefaults(t *testing.T) {
	s, err := DecodeBody[SendMigrationData]([]byte(`{"destination_url":"unix:/s"}`))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(s)
	want := `{"destination_url":"unix:/s","local":false,"preserve_source":false,"downtime_ms":300,"timeout_s":3600,"timeout_strategy":"Cancel","connections":1,"memory_mode":"Precopy"}`
	if string(out) != want {
		t.Errorf("got %s", out)
	}
	r, err := DecodeBody[RestoreConfig]([]byte(`{"source_url":"file:///snap"}`))
	if err != nil {
		t.Fatal(err)
	}
	out, _ = json.Marshal(r)
	want = `{"source_url":"file:///snap","prefault":false,"memory_restore_mode":"Copy","resume":false,"zone_updates":[]}`
	if string(out) != want {
		t.Errorf("got %s", out)
	}
	if _, err := DecodeBody[RestoreConfig]([]byte(`{}`)); err == nil {
		t.Error("restore without source_url accepted")
	}
}

func fmtSscanHex(s string, b *byte) (int, error) {
	var v uint
	n, err := fmt.Sscanf(s, "%x", &v)
	*b = byte(v)
	return n, err
}

func FuzzVmConfigDecode(f *testing.F) {
	for _, s := range []string{`{}`, `{"cpus":{"boot_vcpus":1,"max_vcpus":1}}`, `{"disks":[{"path":"/a"}],"net":[{"fds":[3,4]}]}`,
		`{"platform":{"iommufd_fd":3},"devices":[{"fd":1}]}`, `{"payload":{"kernel":"/k"},"vsock":{"cid":3,"socket":"/s"}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrJSON) {
				t.Fatalf("error %v does not wrap ErrJSON", err)
			}
			return
		}
		_ = c.Validate()
		c.AssignDeviceIDs()
		if _, err := Encode(c); err != nil {
			t.Fatalf("encode: %v", err)
		}
	})
}

// TestDecodeFixups pins the post-decode rules shared through decodeFixed:
// fds that arrive in JSON decode as -1, plain Vecs are written as [], and
// required fields are checked before anything is decoded.
func TestDecodeFixups(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		decode         func([]byte) (any, error)
	}{
		{"restore", `{"source_url":"file:///s","net_fds":[{"id":"n","num_fds":2,"fds":[3,4]}],"vfio_fds":[{"id":"v","fd":7}],"iommufd_fd":9}`,
			`{"source_url":"file:///s","prefault":false,"memory_restore_mode":"Copy","net_fds":[{"id":"n","num_fds":2,"fds":[-1,-1]}],"vfio_fds":[{"id":"v","fd":-1}],"iommufd_fd":-1,"resume":false,"zone_updates":[]}`,
			func(b []byte) (any, error) { return DecodeBody[RestoreConfig](b) }},
		{"restore without source_url", `{"net_fds":[{"id":"n","num_fds":1}]}`, "missing field `source_url`",
			func(b []byte) (any, error) { return DecodeBody[RestoreConfig](b) }},
		{"restored net without id", `{"source_url":"file:///s","net_fds":[{"num_fds":1}]}`, "missing field `id`",
			func(b []byte) (any, error) { return DecodeBody[RestoreConfig](b) }},
		{"receive", `{"receiver_url":"unix:/r","vfio_fds":[{"id":"v"}],"iommufd_fd":4,"zone_updates":[{"id":"z","host_numa_node":1}]}`,
			`{"receiver_url":"unix:/r","memory_mode":"Precopy","vfio_fds":[{"id":"v"}],"iommufd_fd":-1,"zone_updates":[{"id":"z","host_numa_node":1}]}`,
			func(b []byte) (any, error) { return DecodeBody[ReceiveMigrationData](b) }},
		{"receive without receiver_url", `{}`, "missing field `receiver_url`",
			func(b []byte) (any, error) { return DecodeBody[ReceiveMigrationData](b) }},
		{"vfio device", `{"path":"/sys/x","fd":3}`,
			`{"path":"/sys/x","fd":-1,"x_exclude_mmap_bars":[],"pci_segment":0}`,
			func(b []byte) (any, error) { return DecodeBody[DeviceConfig](b) }},
		{"platform", `{"iommufd_fd":5,"system_uuid":"keep","uuid":"alias"}`,
			`{"num_pci_segments":1,"iommu_address_width_bits":64,"system_uuid":"keep","iommufd":false,"iommufd_fd":-1,"vfio_p2p_dma":true}`,
			func(b []byte) (any, error) { return DecodeBody[PlatformConfig](b) }},
		{"platform bad alias", `{"serial_number":5}`, "cannot unmarshal number",
			func(b []byte) (any, error) { return DecodeBody[PlatformConfig](b) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := tc.decode([]byte(tc.in))
			if err != nil {
				if !errors.Is(err, ErrJSON) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v, want ErrJSON containing %q", err, tc.want)
				}
				return
			}
			out, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tc.want {
				t.Errorf("got  %s\nwant %s", out, tc.want)
			}
		})
	}
}
