package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ErrJSON classifies a request body that is not valid JSON for the target
// type. The API renders it as upstream's
// ["Failed to deserialize JSON", "<detail>"], the detail being the wrapped
// error's text after the "...: " prefix (see JSONError.Detail).
var ErrJSON = errors.New("Failed to deserialize JSON")

// JSONError is a deserialization failure; Detail is the serde-like message.
type JSONError struct{ Detail string }

func (e *JSONError) Error() string { return ErrJSON.Error() + ": " + e.Detail }

// Unwrap makes errors.Is(err, ErrJSON) hold.
func (e *JSONError) Unwrap() error { return ErrJSON }

func jsonErr(err error) error {
	var je *JSONError
	if errors.As(err, &je) {
		return je
	}
	// Go's messages name the method-less alias types; say "field" instead.
	msg := strings.ReplaceAll(err.Error(), "Go struct field plain.", "field ")
	msg = strings.TrimPrefix(msg, "json: ")
	return &JSONError{Detail: msg}
}

// Decode parses a vm.create body (a whole VmConfig), applying upstream's
// defaults for every absent field. Errors wrap ErrJSON.
func Decode(data []byte) (*VmConfig, error) {
	var c VmConfig
	if err := DecodeInto(data, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// DecodeInto parses any request body (a VmConfig or one sub-config such as a
// vm.add-disk DiskConfig, or RestoreConfig, ...) into v with upstream's
// defaults. Unknown fields are ignored, as serde does. Errors wrap ErrJSON.
func DecodeInto[T any](data []byte, v *T) error {
	if err := json.Unmarshal(data, v); err != nil {
		return jsonErr(err)
	}
	return nil
}

// DecodeBody is DecodeInto returning a fresh value.
func DecodeBody[T any](data []byte) (*T, error) {
	v := new(T)
	if err := DecodeInto(data, v); err != nil {
		return nil, err
	}
	return v, nil
}

// Encode renders c exactly as vm.info reports it under "config".
func Encode(c *VmConfig) ([]byte, error) { return json.Marshal(c) }

// decodeRequired is the body of most struct UnmarshalJSON methods: check
// the required fields (none: no check), decode into a copy of init (the
// zero value or upstream's defaults) of the method-less plain type P, and
// store it in dst only on success.
func decodeRequired[P any](b []byte, dst *P, init P, required ...string) error {
	return decodeFixed(b, dst, init, nil, required...)
}

// decodeFixed is decodeRequired with fix (if not nil) applied to the
// decoded value before it is stored: JSON fds to -1, nil lists to empty,
// field aliases.
func decodeFixed[P any](b []byte, dst *P, init P, fix func(*P) error, required ...string) error {
	if len(required) > 0 {
		if err := requireFields(b, required...); err != nil {
			return err
		}
	}
	p := init
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	if fix != nil {
		if err := fix(&p); err != nil {
			return err
		}
	}
	*dst = p
	return nil
}

// jsonFd is what an fd given in JSON decodes to, as upstream: -1, since
// only descriptors passed with SCM_RIGHTS are real. Absent stays nil.
func jsonFd(fd *int32) *int32 {
	if fd == nil {
		return nil
	}
	inv := int32(-1)
	return &inv
}

// jsonFds sets every fd given in JSON to -1 (see jsonFd).
func jsonFds(fds []int32) {
	for i := range fds {
		fds[i] = -1
	}
}

// orEmpty returns s, or an empty slice for nil, for fields that are a plain
// Vec upstream and so are always written as [].
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// requireFields mirrors serde's "missing field" errors for non-Option
// fields without a default. An explicit null counts as missing because a
// null can't become a number or string in serde either.
func requireFields(data []byte, names ...string) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	if m == nil {
		return &JSONError{Detail: "invalid type: null, expected struct"}
	}
	for _, n := range names {
		raw, ok := m[n]
		if !ok {
			return &JSONError{Detail: fmt.Sprintf("missing field `%s`", n)}
		}
		if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
			return &JSONError{Detail: fmt.Sprintf("invalid type: null for field `%s`", n)}
		}
	}
	return nil
}

// decodeEnum checks s against upstream's variant names.
func decodeEnum(data []byte, dst *string, variants ...string) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	for _, v := range variants {
		if s == v {
			*dst = s
			return nil
		}
	}
	quoted := make([]string, len(variants))
	for i, v := range variants {
		quoted[i] = "`" + v + "`"
	}
	return &JSONError{Detail: fmt.Sprintf("unknown variant `%s`, expected one of %s", s, strings.Join(quoted, ", "))}
}

// isNull reports whether data is the JSON literal null.
func isNull(data []byte) bool { return bytes.Equal(bytes.TrimSpace(data), []byte("null")) }

// ---------------------------------------------------------------------------
// Enums

// UnmarshalJSON accepts only upstream's variant names.
func (v *CoreScheduling) UnmarshalJSON(b []byte) error {
	return decodeEnum(b, (*string)(v), "Vm", "Vcpu", "Off")
}

// UnmarshalJSON accepts only upstream's variant names.
func (v *CpuProfile) UnmarshalJSON(b []byte) error {
	return decodeEnum(b, (*string)(v), "Host")
}

// UnmarshalJSON accepts only upstream's variant names.
func (v *HotplugMethod) UnmarshalJSON(b []byte) error {
	return decodeEnum(b, (*string)(v), "Acpi", "VirtioMem")
}

// UnmarshalJSON accepts only upstream's variant names.
func (v *ImageType) UnmarshalJSON(b []byte) error {
	return decodeEnum(b, (*string)(v), "FixedVhd", "Qcow2", "Raw", "Vhdx", "FlatVmdk", "Unknown")
}

// UnmarshalJSON accepts only upstream's variant names.
func (v *LockGranularity) UnmarshalJSON(b []byte) error {
	return decodeEnum(b, (*string)(v), "ByteRange", "Full")
}

// UnmarshalJSON accepts only upstream's variant names.
func (v *VhostMode) UnmarshalJSON(b []byte) error {
	return decodeEnum(b, (*string)(v), "Client", "Server")
}

// UnmarshalJSON accepts only upstream's variant names.
func (v *ConsoleOutputMode) UnmarshalJSON(b []byte) error {
	return decodeEnum(b, (*string)(v), "Off", "Pty", "Tty", "File", "Socket", "Null")
}

// UnmarshalJSON accepts only upstream's variant names.
func (v *MemoryRestoreMode) UnmarshalJSON(b []byte) error {
	return decodeEnum(b, (*string)(v), "Copy", "OnDemand")
}

// UnmarshalJSON accepts only upstream's variant names.
func (v *MemoryMigrationMode) UnmarshalJSON(b []byte) error {
	return decodeEnum(b, (*string)(v), "Precopy", "Postcopy")
}

// UnmarshalJSON accepts only upstream's variant names.
func (v *TimeoutStrategy) UnmarshalJSON(b []byte) error {
	return decodeEnum(b, (*string)(v), "Cancel", "Ignore")
}

// ---------------------------------------------------------------------------
// Structs. Each decodes into a copy pre-filled with upstream's defaults via a
// method-less alias type, so nested and bare decoding behave the same.

// UnmarshalJSON applies upstream's defaults to absent fields.
func (c *VmConfig) UnmarshalJSON(b []byte) error {
	if isNull(b) {
		return &JSONError{Detail: "invalid type: null, expected struct VmConfig"}
	}
	type plain VmConfig
	return decodeRequired(b, (*plain)(c), plain(DefaultVmConfig()))
}

// UnmarshalJSON requires boot_vcpus and max_vcpus, as upstream does.
func (c *CpusConfig) UnmarshalJSON(b []byte) error {
	if isNull(b) {
		*c = DefaultCpusConfig()
		return nil
	}
	type plain CpusConfig
	return decodeRequired(b, (*plain)(c), plain(DefaultCpusConfig()), "boot_vcpus", "max_vcpus")
}

// UnmarshalJSON requires all four topology parts.
func (c *CpuTopology) UnmarshalJSON(b []byte) error {
	type plain CpuTopology
	return decodeRequired(b, (*plain)(c), plain{}, "threads_per_core", "cores_per_die", "dies_per_package", "packages")
}

// UnmarshalJSON requires vcpu and host_cpus.
func (c *CpuAffinity) UnmarshalJSON(b []byte) error {
	type plain CpuAffinity
	return decodeRequired(b, (*plain)(c), plain{}, "vcpu", "host_cpus")
}

// UnmarshalJSON requires size; other fields default.
func (c *MemoryConfig) UnmarshalJSON(b []byte) error {
	if isNull(b) {
		*c = DefaultMemoryConfig()
		return nil
	}
	type plain MemoryConfig
	return decodeRequired(b, (*plain)(c), plain(DefaultMemoryConfig()), "size")
}

// UnmarshalJSON requires id and size.
func (c *MemoryZoneConfig) UnmarshalJSON(b []byte) error {
	type plain MemoryZoneConfig
	return decodeRequired(b, (*plain)(c), plain{}, "id", "size")
}

// UnmarshalJSON fills fw_cfg defaults (everything on).
func (c *FwCfgConfig) UnmarshalJSON(b []byte) error {
	type plain FwCfgConfig
	return decodeRequired(b, (*plain)(c), plain{E820: true, Kernel: true, Cmdline: true, Initramfs: true, ACPITables: true})
}

// UnmarshalJSON requires size and refill_time.
func (c *TokenBucketConfig) UnmarshalJSON(b []byte) error {
	type plain TokenBucketConfig
	return decodeRequired(b, (*plain)(c), plain{}, "size", "refill_time")
}

// UnmarshalJSON denies unknown fields, as upstream's
// #[serde(deny_unknown_fields)] does.
func (c *RateLimiterConfig) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	for k := range m {
		if k != "bandwidth" && k != "ops" {
			return &JSONError{Detail: fmt.Sprintf("unknown field `%s`, expected `bandwidth` or `ops`", k)}
		}
	}
	type plain RateLimiterConfig
	return decodeRequired(b, (*plain)(c), plain{})
}

// UnmarshalJSON requires queue_index and host_cpus.
func (c *VirtQueueAffinity) UnmarshalJSON(b []byte) error {
	type plain VirtQueueAffinity
	return decodeRequired(b, (*plain)(c), plain{}, "queue_index", "host_cpus")
}

// UnmarshalJSON applies the disk defaults (1x128 queues, sparse, Unknown
// image type, ByteRange locking).
func (c *DiskConfig) UnmarshalJSON(b []byte) error {
	type plain DiskConfig
	return decodeRequired(b, (*plain)(c), plain(DefaultDiskConfig()))
}

// UnmarshalJSON applies the NIC defaults. As upstream, fds that arrive in
// JSON are not real descriptors and decode as -1 each, and a missing MAC is
// replaced by a random locally administered one.
func (c *NetConfig) UnmarshalJSON(b []byte) error {
	type plain NetConfig
	return decodeFixed(b, (*plain)(c), plain(DefaultNetConfig()), func(p *plain) error {
		jsonFds(p.Fds)
		if p.MAC == "" {
			mac, err := RandomMAC()
			if err != nil {
				return err
			}
			p.MAC = mac
		}
		return nil
	})
}

// UnmarshalJSON requires src when the rng object is given.
func (c *RngConfig) UnmarshalJSON(b []byte) error {
	if isNull(b) {
		*c = DefaultRngConfig()
		return nil
	}
	type plain RngConfig
	return decodeRequired(b, (*plain)(c), plain{}, "src")
}

// UnmarshalJSON requires size.
func (c *BalloonConfig) UnmarshalJSON(b []byte) error {
	type plain BalloonConfig
	return decodeRequired(b, (*plain)(c), plain{}, "size")
}

// UnmarshalJSON requires tag and socket; queues default to 1x1024.
func (c *FsConfig) UnmarshalJSON(b []byte) error {
	type plain FsConfig
	return decodeRequired(b, (*plain)(c), plain{NumQueues: DefaultFsNumQueues, QueueSize: DefaultFsQueueSize}, "tag", "socket")
}

// UnmarshalJSON requires socket, queue_sizes and device_type.
func (c *GenericVhostUserConfig) UnmarshalJSON(b []byte) error {
	type plain GenericVhostUserConfig
	return decodeRequired(b, (*plain)(c), plain{}, "socket", "queue_sizes", "device_type")
}

// UnmarshalJSON requires file.
func (c *PmemConfig) UnmarshalJSON(b []byte) error {
	type plain PmemConfig
	return decodeRequired(b, (*plain)(c), plain{}, "file")
}

// UnmarshalJSON requires mode when the serial object is given.
func (c *SerialConfig) UnmarshalJSON(b []byte) error {
	if isNull(b) {
		*c = DefaultSerialConfig()
		return nil
	}
	type plain SerialConfig
	return decodeRequired(b, (*plain)(c), plain{}, "mode")
}

// UnmarshalJSON requires mode when the console object is given.
func (c *ConsoleConfig) UnmarshalJSON(b []byte) error {
	if isNull(b) {
		*c = DefaultConsoleConfig()
		return nil
	}
	type plain ConsoleConfig
	return decodeRequired(b, (*plain)(c), plain{}, "mode")
}

// UnmarshalJSON requires mode; unlike the whole-field default, a given
// object without iobase has none (upstream's Option without default).
func (c *DebugConsoleConfig) UnmarshalJSON(b []byte) error {
	if isNull(b) {
		*c = DefaultDebugConsoleConfig()
		return nil
	}
	type plain DebugConsoleConfig
	return decodeRequired(b, (*plain)(c), plain{}, "mode")
}

// UnmarshalJSON decodes a VFIO device; a JSON fd is not a real descriptor
// and decodes as -1, as upstream.
func (c *DeviceConfig) UnmarshalJSON(b []byte) error {
	type plain DeviceConfig
	return decodeFixed(b, (*plain)(c), plain{}, func(p *plain) error {
		p.Fd = jsonFd(p.Fd)
		p.XExcludeMmapBars = orEmpty(p.XExcludeMmapBars)
		return nil
	})
}

// MarshalJSON always writes x_exclude_mmap_bars (a plain Vec upstream).
func (c DeviceConfig) MarshalJSON() ([]byte, error) {
	type plain DeviceConfig
	p := plain(c)
	p.XExcludeMmapBars = orEmpty(p.XExcludeMmapBars)
	return json.Marshal(p)
}

// UnmarshalJSON requires socket.
func (c *UserDeviceConfig) UnmarshalJSON(b []byte) error {
	type plain UserDeviceConfig
	return decodeRequired(b, (*plain)(c), plain{}, "socket")
}

// UnmarshalJSON requires path; num_queues defaults to 1.
func (c *VdpaConfig) UnmarshalJSON(b []byte) error {
	type plain VdpaConfig
	return decodeRequired(b, (*plain)(c), plain{NumQueues: DefaultVdpaNumQueues}, "path")
}

// UnmarshalJSON requires cid and socket.
func (c *VsockConfig) UnmarshalJSON(b []byte) error {
	type plain VsockConfig
	return decodeRequired(b, (*plain)(c), plain{}, "cid", "socket")
}

// UnmarshalJSON requires guest_numa_id.
func (c *NumaConfig) UnmarshalJSON(b []byte) error {
	type plain NumaConfig
	return decodeRequired(b, (*plain)(c), plain{}, "guest_numa_id")
}

// UnmarshalJSON defaults both aperture weights to 1.
func (c *PciSegmentConfig) UnmarshalJSON(b []byte) error {
	type plain PciSegmentConfig
	return decodeRequired(b, (*plain)(c), plain{Mmio32ApertureWeight: DefaultApertureWeight, Mmio64ApertureWeight: DefaultApertureWeight})
}

// UnmarshalJSON applies the platform defaults and upstream's field aliases
// (serial_number, uuid); a JSON iommufd_fd decodes as -1.
func (c *PlatformConfig) UnmarshalJSON(b []byte) error {
	type plain PlatformConfig
	return decodeFixed(b, (*plain)(c), plain(DefaultPlatformConfig()), func(p *plain) error {
		var alias struct {
			SerialNumber *string `json:"serial_number"`
			UUID         *string `json:"uuid"`
		}
		if err := json.Unmarshal(b, &alias); err != nil {
			return err
		}
		if alias.SerialNumber != nil && p.SystemSerialNumber == "" {
			p.SystemSerialNumber = *alias.SerialNumber
		}
		if alias.UUID != nil && p.SystemUUID == "" {
			p.SystemUUID = *alias.UUID
		}
		p.IommufdFd = jsonFd(p.IommufdFd)
		return nil
	})
}

// UnmarshalJSON requires socket.
func (c *TpmConfig) UnmarshalJSON(b []byte) error {
	type plain TpmConfig
	return decodeRequired(b, (*plain)(c), plain{}, "socket")
}

// UnmarshalJSON requires path and access.
func (c *LandlockConfig) UnmarshalJSON(b []byte) error {
	type plain LandlockConfig
	return decodeRequired(b, (*plain)(c), plain{}, "path", "access")
}

// UnmarshalJSON requires id; JSON fds decode as -1 each.
func (c *RestoredNetConfig) UnmarshalJSON(b []byte) error {
	type plain RestoredNetConfig
	return decodeFixed(b, (*plain)(c), plain{}, func(p *plain) error {
		jsonFds(p.Fds)
		return nil
	}, "id")
}

// UnmarshalJSON requires id; a JSON fd decodes as -1.
func (c *RestoredVfioConfig) UnmarshalJSON(b []byte) error {
	type plain RestoredVfioConfig
	return decodeFixed(b, (*plain)(c), plain{}, func(p *plain) error {
		p.Fd = jsonFd(p.Fd)
		return nil
	}, "id")
}

// UnmarshalJSON requires id and host_numa_node.
func (c *ZoneUpdate) UnmarshalJSON(b []byte) error {
	type plain ZoneUpdate
	return decodeRequired(b, (*plain)(c), plain{}, "id", "host_numa_node")
}

// UnmarshalJSON requires source_url; defaults Copy, no prefault, no resume.
func (c *RestoreConfig) UnmarshalJSON(b []byte) error {
	type plain RestoreConfig
	return decodeFixed(b, (*plain)(c), plain{MemoryRestoreMode: MemoryRestoreCopy}, func(p *plain) error {
		p.ZoneUpdates = orEmpty(p.ZoneUpdates)
		p.IommufdFd = jsonFd(p.IommufdFd)
		return nil
	}, "source_url")
}

// UnmarshalJSON requires receiver_url; memory_mode defaults to Precopy.
func (c *ReceiveMigrationData) UnmarshalJSON(b []byte) error {
	type plain ReceiveMigrationData
	return decodeFixed(b, (*plain)(c), plain{MemoryMode: MigrationPrecopy}, func(p *plain) error {
		p.ZoneUpdates = orEmpty(p.ZoneUpdates)
		p.IommufdFd = jsonFd(p.IommufdFd)
		return nil
	}, "receiver_url")
}

// UnmarshalJSON requires destination_url and fills upstream's defaults
// (300 ms downtime, 3600 s timeout, Cancel, one connection, Precopy).
func (c *SendMigrationData) UnmarshalJSON(b []byte) error {
	type plain SendMigrationData
	return decodeRequired(b, (*plain)(c), plain(DefaultSendMigrationData()), "destination_url")
}

// MarshalJSON writes zone_updates as [] when empty (a plain Vec upstream).
func (c RestoreConfig) MarshalJSON() ([]byte, error) {
	type plain RestoreConfig
	p := plain(c)
	p.ZoneUpdates = orEmpty(p.ZoneUpdates)
	return json.Marshal(p)
}

// MarshalJSON writes zone_updates as [] when empty (a plain Vec upstream).
func (c ReceiveMigrationData) MarshalJSON() ([]byte, error) {
	type plain ReceiveMigrationData
	p := plain(c)
	p.ZoneUpdates = orEmpty(p.ZoneUpdates)
	return json.Marshal(p)
}
