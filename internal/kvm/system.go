package kvm

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// DevicePath is the KVM device node.
const DevicePath = "/dev/kvm"

// System is an open /dev/kvm.
type System struct {
	fd       int
	mmapSize int // KVM_GET_VCPU_MMAP_SIZE, cached at Open
}

// Open opens /dev/kvm and checks the API version.
func Open() (*System, error) { return OpenPath(DevicePath) }

// OpenPath opens a KVM device node at path and checks the API version.
func OpenPath(path string) (*System, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w: %w", path, ErrUnavailable, err)
	}
	s := &System{fd: fd}
	v, err := s.APIVersion()
	if err != nil {
		s.Close()
		return nil, err
	}
	if v != APIVersion {
		s.Close()
		return nil, fmt.Errorf("%s reports API version %d, want %d: %w", path, v, APIVersion, ErrAPIVersion)
	}
	if s.mmapSize, err = ioctl(fd, "KVM_GET_VCPU_MMAP_SIZE", kvmGetVcpuMmapSize, 0); err != nil {
		s.Close()
		return nil, err
	}
	if s.mmapSize < runMinSize {
		s.Close()
		return nil, fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE = %d, below sizeof(kvm_run): %w", s.mmapSize, ErrAPIVersion)
	}
	return s, nil
}

// Available reports whether /dev/kvm exists (it may still be unopenable).
func Available() bool {
	_, err := os.Stat(DevicePath)
	return err == nil
}

// Close closes /dev/kvm. VMs created from it stay valid.
func (s *System) Close() error {
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
}

// Fd returns the /dev/kvm file descriptor.
func (s *System) Fd() int { return s.fd }

// APIVersion returns KVM_GET_API_VERSION.
func (s *System) APIVersion() (int, error) {
	return ioctl(s.fd, "KVM_GET_API_VERSION", kvmGetAPIVersion, 0)
}

// VcpuMmapSize returns KVM_GET_VCPU_MMAP_SIZE: the size of a vCPU's
// kvm_run mapping, including the PIO data page.
func (s *System) VcpuMmapSize() int { return s.mmapSize }

// CheckExtension returns KVM_CHECK_EXTENSION for c: 0 if absent, otherwise
// 1 or a capability-specific value (e.g. the slot count for
// CapNrMemslots).
func (s *System) CheckExtension(c Cap) (int, error) {
	return checkExtension(s.fd, c)
}

func checkExtension(fd int, c Cap) (int, error) {
	n, err := ioctl(fd, "KVM_CHECK_EXTENSION", kvmCheckExtension, uintptr(c))
	if err != nil {
		return 0, fmt.Errorf("%v: %w", c, err)
	}
	return n, nil
}

// RequireCaps checks every capability and returns a *MissingCapError
// (matching ErrMissingCap) naming the first one that is absent.
func (s *System) RequireCaps(caps ...Cap) error {
	for _, c := range caps {
		n, err := s.CheckExtension(c)
		if err != nil {
			return err
		}
		if n == 0 {
			return &MissingCapError{Cap: c}
		}
	}
	return nil
}

// maxCPUIDEntries bounds KVM_GET_SUPPORTED_CPUID retries; the kernel's
// own limit (KVM_MAX_CPUID_ENTRIES) is 256.
const maxCPUIDEntries = 1024

// SupportedCPUID returns KVM_GET_SUPPORTED_CPUID.
func (s *System) SupportedCPUID() (CPUID, error) {
	for n := 64; n <= maxCPUIDEntries; n *= 2 {
		b := make([]byte, sizeofCPUID2+n*sizeofCPUIDEntry)
		putU32(b, uint32(n))
		_, err := ioctlBuf(s.fd, "KVM_GET_SUPPORTED_CPUID", kvmGetSupportedCPUID, b)
		if errors.Is(err, unix.E2BIG) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var c CPUID
		return c, c.UnmarshalBinary(b)
	}
	return nil, fmt.Errorf("KVM_GET_SUPPORTED_CPUID: more than %d entries: %w", maxCPUIDEntries, ErrInvalidArgument)
}

// MSRIndexList returns KVM_GET_MSR_INDEX_LIST: the MSRs KVM saves and
// restores for a vCPU.
func (s *System) MSRIndexList() ([]uint32, error) {
	// The first call with nmsrs=0 fails with E2BIG and reports the count.
	hdr := make([]byte, sizeofMSRList)
	if _, err := ioctlBuf(s.fd, "KVM_GET_MSR_INDEX_LIST", kvmGetMSRIndexList, hdr); err != nil && !errors.Is(err, unix.E2BIG) {
		return nil, err
	}
	n := int(getU32(hdr))
	b := make([]byte, sizeofMSRList+4*n)
	putU32(b, uint32(n))
	if _, err := ioctlBuf(s.fd, "KVM_GET_MSR_INDEX_LIST", kvmGetMSRIndexList, b); err != nil {
		return nil, err
	}
	n = min(int(getU32(b)), n)
	out := make([]uint32, n)
	for i := range out {
		out[i] = getU32(b[sizeofMSRList+4*i:])
	}
	return out, nil
}

// CreateVM creates a VM (KVM_CREATE_VM, default machine type).
func (s *System) CreateVM() (*VM, error) {
	fd, err := ioctl(s.fd, "KVM_CREATE_VM", kvmCreateVM, 0)
	if err != nil {
		return nil, err
	}
	unix.CloseOnExec(fd)
	return &VM{fd: fd, mmapSize: s.mmapSize}, nil
}
