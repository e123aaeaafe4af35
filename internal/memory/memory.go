package memory

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"sort"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/kvm"
)

// Sentinel error categories.
var (
	// ErrBadAddress: a guest-physical access outside RAM.
	ErrBadAddress = errors.New("guest address out of range")
	// ErrInvalid: sizes or options that cannot be mapped.
	ErrInvalid = errors.New("invalid guest memory configuration")
	// ErrMap: the host refused to allocate or map the memory.
	ErrMap = errors.New("mapping guest memory failed")
)

// DefaultHugepageSize is used when Hugepages is set without a size.
const DefaultHugepageSize = 2 << 20

// Options says how one zone's host memory is allocated, following
// upstream's MemoryConfig/MemoryZoneConfig fields of the same names.
type Options struct {
	// Shared backs the memory with a memfd mapped MAP_SHARED (needed by
	// vhost-user back ends), instead of private anonymous memory.
	Shared bool
	// Hugepages backs the memory with hugetlbfs pages of HugepageSize
	// (0 means DefaultHugepageSize).
	Hugepages    bool
	HugepageSize uint64
	// Prefault populates every page at creation (MAP_POPULATE).
	Prefault bool
	// THP asks for transparent huge pages (MADV_HUGEPAGE); ignored with
	// Hugepages.
	THP bool
	// Reserve commits swap/RAM for the whole size up front; by default the
	// mapping is MAP_NORESERVE and pages are committed as the guest
	// touches them. Hugepage mappings are always reserved.
	Reserve bool
}

// Zone is one memory zone (upstream's memory_zones): a named amount of
// RAM with its own allocation options. Zones are laid out in order from
// guest address 0, skipping the 32-bit hole.
type Zone struct {
	ID   string
	Size uint64
	Options
	// Backing, for a Shared zone, is a memfd to map instead of making one
	// (a local migration's destination maps the source's); the Memory
	// keeps its own duplicate.
	Backing *os.File
}

// RegionInfo describes one mapped RAM region.
type RegionInfo struct {
	Region
	Zone     string
	HostAddr uint64 // host virtual address of the first byte
	Slot     uint32 // KVM slot, valid after Register
	// FD is the zone's memfd (Shared zones) or -1, and FileOffset the
	// region's offset in it; vhost-user back ends map the memory by these.
	FD         int
	FileOffset uint64
}

type zoneMap struct {
	id   string
	data []byte // the whole zone's mapping
	fd   int
	huge bool // hugetlb pages: madvise(MADV_DONTNEED) cannot discard them
}

type region struct {
	RegionInfo
	data []byte // the region's part of its zone's mapping
	huge bool   // from a hugetlb zone
	// fileBacked: MapPrivate put a file under it; pages never touched
	// read the file, not zeros.
	fileBacked bool
	// log is the VMM's own writes while dirty logging is on (nil off).
	log *dirtyBits
}

// Memory is a guest's RAM: host mappings laid out in guest-physical
// address space. Its accessors are safe for concurrent use, also with
// Plug; Close is not, and must come after every user has stopped.
type Memory struct {
	// regions is sorted by GPA, non-overlapping, and never changed once
	// published: Plug publishes a new slice, so that device goroutines
	// read guest memory without a lock while RAM is hot-added.
	regions atomic.Pointer[[]region]

	mu        sync.Mutex // Plug, Register and Close
	zones     []zoneMap
	size      uint64
	nextSlot  uint32   // the KVM slot after the last registered one
	freeSlots []uint32 // slots device mappings gave back
	flags     uint32   // slot flags of Register, for plugged regions too

	pagemapOnce sync.Once // Populated's /proc/self/pagemap
	pagemap     *os.File
	pagemapErr  error
}

// New maps size bytes of guest RAM with the upstream layout (one zone).
func New(size uint64, opts Options) (*Memory, error) {
	return NewZones([]Zone{{ID: "", Size: size, Options: opts}})
}

// NewZones maps the zones in order from guest address 0.
func NewZones(zones []Zone) (*Memory, error) {
	if len(zones) == 0 {
		return nil, fmt.Errorf("no memory zones: %w", ErrInvalid)
	}
	m := &Memory{}
	var all []region
	next := uint64(0)
	for _, z := range zones {
		zm, err := mapZone(z)
		if err != nil {
			m.Close()
			return nil, err
		}
		m.zones = append(m.zones, zm)
		var regs []Region
		regs, next = layoutFrom(next, z.Size)
		all = append(all, zoneRegions(zm, z.ID, regs)...)
		m.size += z.Size
	}
	sort.Slice(all, func(i, j int) bool { return all[i].GPA < all[j].GPA })
	m.regions.Store(&all)
	return m, nil
}

// zoneRegions cuts zm's mapping into regs, in order.
func zoneRegions(zm zoneMap, id string, regs []Region) []region {
	out := make([]region, 0, len(regs))
	off := uint64(0)
	for _, r := range regs {
		data := zm.data[off : off+r.Size : off+r.Size]
		out = append(out, region{
			RegionInfo: RegionInfo{Region: r, Zone: id, HostAddr: hostAddr(data), FD: zm.fd, FileOffset: off},
			data:       data,
			huge:       zm.huge,
		})
		off += r.Size
	}
	return out
}

// list is the published region slice (nil after Close).
func (m *Memory) list() []region {
	if p := m.regions.Load(); p != nil {
		return *p
	}
	return nil
}

// Plug maps size bytes of new RAM with opts at guest address gpa, which
// must not overlap RAM, registers it with vm in a free KVM slot (with
// Register's flags), and only then makes it visible to the accessors:
// upstream's MemoryManager::add_ram_region for ACPI memory hotplug. id
// names the mapping (memfd name, RegionInfo.Zone). Nothing stays mapped
// on error.
func (m *Memory) Plug(vm SlotRegistrar, id string, gpa, size uint64, opts Options) (RegionInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if gpa%PageSize != 0 || gpa+size < gpa {
		return RegionInfo{}, fmt.Errorf("plug %#x bytes at %#x: %w", size, gpa, ErrInvalid)
	}
	cur := m.list()
	for _, r := range cur {
		if gpa < r.End() && r.GPA < gpa+size {
			return RegionInfo{}, fmt.Errorf("plug [%#x-%#x) overlaps RAM %v: %w", gpa, gpa+size, r.Region, ErrInvalid)
		}
	}
	zm, err := mapZone(Zone{ID: id, Size: size, Options: opts})
	if err != nil {
		return RegionInfo{}, err
	}
	r := zoneRegions(zm, id, []Region{{GPA: gpa, Size: size}})[0]
	r.Slot = m.allocSlot()
	err = vm.SetUserMemoryRegion(kvm.UserspaceMemoryRegion{
		Slot: r.Slot, Flags: m.flags, GuestPhysAddr: r.GPA, MemorySize: r.Size, UserspaceAddr: r.HostAddr,
	})
	if err != nil {
		m.freeSlots = append(m.freeSlots, r.Slot)
		zm.unmap()
		return RegionInfo{}, fmt.Errorf("register hot-added RAM %v: %w", r.Region, err)
	}
	m.zones = append(m.zones, zm)
	m.size += size
	next := append(append(make([]region, 0, len(cur)+1), cur...), r)
	sort.Slice(next, func(i, j int) bool { return next[i].GPA < next[j].GPA })
	m.regions.Store(&next)
	return r.RegionInfo, nil
}

func mapZone(z Zone) (zoneMap, error) {
	name := z.ID
	if name == "" {
		name = "ram"
	}
	if z.Size == 0 || z.Size%PageSize != 0 {
		return zoneMap{}, fmt.Errorf("zone %q: size %#x is not a positive multiple of %d: %w", name, z.Size, PageSize, ErrInvalid)
	}
	var hugeBits int
	if z.Hugepages {
		hs := z.HugepageSize
		if hs == 0 {
			hs = DefaultHugepageSize
		}
		if hs&(hs-1) != 0 || hs < PageSize {
			return zoneMap{}, fmt.Errorf("zone %q: hugepage_size %#x is not a power of two: %w", name, hs, ErrInvalid)
		}
		if z.Size%hs != 0 {
			return zoneMap{}, fmt.Errorf("zone %q: size %#x is not a multiple of hugepage_size %#x: %w", name, z.Size, hs, ErrInvalid)
		}
		// MAP_HUGE_* and MFD_HUGE_* encode log2(size) at bit 26.
		hugeBits = bits.TrailingZeros64(hs) << unix.MAP_HUGE_SHIFT
	}

	prot := unix.PROT_READ | unix.PROT_WRITE
	flags := 0
	// hugetlb pages are reserved at mmap time even so: without a
	// reservation a later fault would SIGBUS the whole VMM instead of
	// failing here.
	if !z.Reserve && !z.Hugepages {
		flags |= unix.MAP_NORESERVE
	}
	if z.Prefault {
		flags |= unix.MAP_POPULATE
	}
	fd := -1
	if z.Shared && z.Backing != nil {
		var err error
		if fd, err = unix.FcntlInt(z.Backing.Fd(), unix.F_DUPFD_CLOEXEC, 3); err != nil {
			return zoneMap{}, fmt.Errorf("zone %q: backing file: %w: %w", name, ErrMap, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || uint64(st.Size) < z.Size {
			unix.Close(fd)
			return zoneMap{}, fmt.Errorf("zone %q: backing file of %d bytes for %#x (%v): %w", name, st.Size, z.Size, err, ErrMap)
		}
		flags |= unix.MAP_SHARED
	} else if z.Shared {
		mfd := unix.MFD_CLOEXEC
		if z.Hugepages {
			mfd |= unix.MFD_HUGETLB | hugeBits
		}
		var err error
		if fd, err = unix.MemfdCreate("nimbus-"+name, mfd); err != nil {
			return zoneMap{}, fmt.Errorf("zone %q: memfd_create: %w: %w", name, ErrMap, err)
		}
		if err := unix.Ftruncate(fd, int64(z.Size)); err != nil {
			unix.Close(fd)
			return zoneMap{}, fmt.Errorf("zone %q: ftruncate %#x: %w: %w", name, z.Size, ErrMap, err)
		}
		flags |= unix.MAP_SHARED
	} else {
		flags |= unix.MAP_PRIVATE | unix.MAP_ANONYMOUS
		if z.Hugepages {
			flags |= unix.MAP_HUGETLB | hugeBits
		}
	}
	data, err := unix.Mmap(fd, 0, int(z.Size), prot, flags)
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return zoneMap{}, fmt.Errorf("zone %q: mmap %#x bytes: %w: %w", name, z.Size, ErrMap, err)
	}
	if z.THP && !z.Hugepages {
		// Best effort, as upstream: kernels without THP answer EINVAL.
		_ = unix.Madvise(data, unix.MADV_HUGEPAGE)
	}
	return zoneMap{id: z.ID, data: data, fd: fd, huge: z.Hugepages}, nil
}

// ZoneFDs are the zones' memfds in order (-1 for a zone that is not
// Shared), for handing guest RAM to another process.
func (m *Memory) ZoneFDs() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]int, len(m.zones))
	for i, z := range m.zones {
		out[i] = z.fd
	}
	return out
}

// Size returns the total RAM in bytes, hot-added RAM included.
func (m *Memory) Size() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.size
}

// Regions returns the mapped regions in guest-address order.
func (m *Memory) Regions() []RegionInfo {
	cur := m.list()
	out := make([]RegionInfo, len(cur))
	for i, r := range cur {
		out[i] = r.RegionInfo
	}
	return out
}

// SlotRegistrar installs KVM memory slots; *kvm.VM implements it.
type SlotRegistrar interface {
	SetUserMemoryRegion(kvm.UserspaceMemoryRegion) error
}

// Register installs every region as a KVM memory slot, numbered from
// firstSlot, with the given slot flags (kvm.MemLogDirtyPages for dirty
// tracking). It returns the next free slot number.
func (m *Memory) Register(vm SlotRegistrar, firstSlot, flags uint32) (uint32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	// A new slice: the published one is never written.
	next := append([]region(nil), m.list()...)
	slot := firstSlot
	for i := range next {
		r := &next[i]
		err := vm.SetUserMemoryRegion(kvm.UserspaceMemoryRegion{
			Slot: slot, Flags: flags, GuestPhysAddr: r.GPA, MemorySize: r.Size, UserspaceAddr: r.HostAddr,
		})
		if err != nil {
			return slot, fmt.Errorf("register guest RAM %v: %w", r.Region, err)
		}
		r.Slot = slot
		slot++
	}
	m.regions.Store(&next)
	m.nextSlot, m.flags = slot, flags
	return slot, nil
}

// Discard gives the host memory behind guest RAM [gpa, gpa+size) back:
// the guest reads zeros there afterwards. It is what a virtio-mem unplug
// or a balloon inflation does (upstream's discard_memory_range): a hole
// punched in a shared zone's memfd, MADV_DONTNEED on the mapping unless
// it is hugetlb. The range may span adjacent regions, not a gap.
func (m *Memory) Discard(gpa, size uint64) error {
	end := gpa + size
	if end < gpa {
		return badAddress(gpa, int(min(size, 1<<31)))
	}
	for cur := gpa; cur < end; {
		r := m.find(cur) // cur is inside r, if any
		if r == nil {
			return badAddress(cur, int(min(end-cur, 1<<31)))
		}
		off, n := cur-r.GPA, min(end, r.End())-cur
		if r.FD >= 0 {
			err := unix.Fallocate(r.FD, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(r.FileOffset+off), int64(n))
			if err != nil {
				return fmt.Errorf("discard %v: punch hole: %w: %w", Region{cur, n}, ErrMap, err)
			}
		}
		if !r.huge {
			if err := unix.Madvise(r.data[off:off+n], unix.MADV_DONTNEED); err != nil {
				return fmt.Errorf("discard %v: madvise: %w: %w", Region{cur, n}, ErrMap, err)
			}
		}
		cur += n
	}
	return nil
}

// Close unmaps the memory and closes any memfds. The caller must have
// stopped every vCPU and device using it (and removed its KVM slots or
// closed the VM).
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for _, z := range m.zones {
		errs = append(errs, z.unmap())
	}
	m.zones, m.size = nil, 0
	m.regions.Store(nil)
	if m.pagemap != nil {
		errs = append(errs, m.pagemap.Close())
		m.pagemap = nil
	}
	return errors.Join(errs...)
}

func (z zoneMap) unmap() error {
	var errs []error
	if err := unix.Munmap(z.data); err != nil {
		errs = append(errs, fmt.Errorf("munmap zone %q: %w", z.id, err))
	}
	if z.fd >= 0 {
		if err := unix.Close(z.fd); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
