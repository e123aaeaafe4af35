// Command hostile is a guest-side test program that behaves as a malicious
// guest driver would: it takes virtio-pci functions away from their Linux
// drivers and feeds the VMM's device models garbage, so that end-to-end
// tests can check that the VMM survives, marks the devices broken and keeps
// serving the API and the other devices.
//
//	hostile queues SEED ADDR...  for each PCI function ADDR (0000:00:03.0):
//	                             unbind its driver, then round after round
//	                             program its queues over the modern virtio
//	                             BAR (virtio 1.2 §4.1.4) with descriptor
//	                             loops, addresses past guest RAM, lengths
//	                             past it, indirect tables in MMIO space,
//	                             rings in MMIO space, avail indexes far
//	                             ahead, bad queue sizes, random bytes;
//	                             notify, and reset the device while its
//	                             requests may be in flight
//	hostile config SEED ADDR...  random writes to the functions' PCI config
//	                             space (BARs moved anywhere, including over
//	                             RAM, MSI-X and command bits) and BARs
//	                             (common config, MSI-X table, notify, ISR)
//	hostile ports SEED           random writes and reads to the legacy
//	                             ports the VMM emulates (i8042 port B,
//	                             CMOS, POST, debug ports, PM timer); not
//	                             the reset, shutdown and serial ports
//
// Every line it prints starts with HOSTILE-. It needs root, sysfs and
// /dev/port.
package main

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 3 {
		fail("usage: hostile queues|config SEED ADDR... | ports SEED")
	}
	seed, err := strconv.ParseUint(os.Args[2], 10, 64)
	if err != nil {
		fail("seed: %v", err)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	switch os.Args[1] {
	case "queues":
		for _, addr := range os.Args[3:] {
			queues(rng, addr)
		}
	case "config":
		for _, addr := range os.Args[3:] {
			configSpace(rng, addr)
		}
	case "ports":
		ports(rng)
	default:
		fail("unknown command %q", os.Args[1])
	}
	fmt.Printf("HOSTILE-DONE %s\n", os.Args[1])
}

func fail(format string, args ...any) {
	fmt.Printf("HOSTILE-FAIL "+format+"\n", args...)
	os.Exit(1)
}

// fn is one PCI function taken from its driver.
type fn struct {
	addr   string
	config *os.File
	bars   [6][]byte // mapped memory BARs
	phys   [6]uint64 // their guest-physical addresses
	common []byte    // virtio common configuration
	notify []byte
	mult   uint32 // notify_off_multiplier
	isr    []byte
}

func sysfs(addr, name string) string { return filepath.Join("/sys/bus/pci/devices", addr, name) }

// take unbinds addr's driver, enables memory decoding and bus mastering
// and maps its BARs.
func take(addr string) *fn {
	if drv, err := os.Readlink(sysfs(addr, "driver")); err == nil {
		if err := os.WriteFile(filepath.Join(sysfs(addr, "driver"), "unbind"), []byte(addr), 0); err != nil {
			fail("%s: unbinding %s: %v", addr, filepath.Base(drv), err)
		}
	}
	f := &fn{addr: addr}
	var err error
	if f.config, err = os.OpenFile(sysfs(addr, "config"), os.O_RDWR, 0); err != nil {
		fail("%s: %v", addr, err)
	}
	f.cfgWrite(4, 2, 0x6) // memory space, bus master
	res, err := os.ReadFile(sysfs(addr, "resource"))
	if err != nil {
		fail("%s: %v", addr, err)
	}
	for i, line := range strings.SplitN(string(res), "\n", 7)[:6] {
		var start, end, flags uint64
		fmt.Sscanf(line, "0x%x 0x%x 0x%x", &start, &end, &flags)
		if start == 0 || flags&0x200 == 0 { // IORESOURCE_MEM
			continue
		}
		bf, err := os.OpenFile(sysfs(addr, fmt.Sprintf("resource%d", i)), os.O_RDWR, 0)
		if err != nil {
			continue
		}
		b, err := unix.Mmap(int(bf.Fd()), 0, int(end-start+1), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		bf.Close()
		if err == nil {
			f.bars[i], f.phys[i] = b, start
		}
	}
	// Vendor capabilities (cap id 9): cfg_type, bar, offset, length.
	for p := f.cfgRead(0x34, 1) &^ 3; p != 0; p = f.cfgRead(p+1, 1) &^ 3 {
		if f.cfgRead(p, 1) != 9 {
			continue
		}
		typ, bar, off, n := f.cfgRead(p+3, 1), f.cfgRead(p+4, 1), f.cfgRead(p+8, 4), f.cfgRead(p+12, 4)
		if bar > 5 || f.bars[bar] == nil || uint64(off)+uint64(n) > uint64(len(f.bars[bar])) {
			continue
		}
		region := f.bars[bar][off : off+n]
		switch typ {
		case 1:
			f.common = region
		case 2:
			f.notify, f.mult = region, f.cfgRead(p+16, 4)
		case 3:
			f.isr = region
		}
	}
	return f
}

func (f *fn) cfgRead(off uint32, n int) uint32 {
	b := make([]byte, 4)
	if _, err := f.config.ReadAt(b[:n], int64(off)); err != nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

func (f *fn) cfgWrite(off uint32, n int, v uint32) {
	b := binary.LittleEndian.AppendUint32(nil, v)
	f.config.WriteAt(b[:n], int64(off)) // errors are part of the game
}

// Common configuration offsets (virtio 1.2 §4.1.4.3).
const (
	cfDeviceFeatureSelect = 0
	cfDeviceFeature       = 4
	cfDriverFeatureSelect = 8
	cfDriverFeature       = 12
	cfNumQueues           = 18
	cfStatus              = 20
	cfQueueSelect         = 22
	cfQueueSize           = 24
	cfQueueEnable         = 28
	cfQueueNotifyOff      = 30
	cfQueueDesc           = 32
	cfQueueDriver         = 40
	cfQueueDevice         = 48
)

// The accessors of the common configuration are never inlined: the
// compiler merges adjacent stores (and loads) into wider ones, and an
// 8-byte write over driver_feature_select and driver_feature is not two
// 4-byte register writes to a device (§4.1.3.1: natural widths only).
// Notify writes go through w16 too.

//go:noinline
func w8(b []byte, off int, v uint8) { b[off] = v }

//go:noinline
func w16(b []byte, off int, v uint16) { binary.LittleEndian.PutUint16(b[off:], v) }

//go:noinline
func w32(b []byte, off int, v uint32) { binary.LittleEndian.PutUint32(b[off:], v) }

//go:noinline
func r8(b []byte, off int) uint8 { return b[off] }

//go:noinline
func r16(b []byte, off int) uint16 { return binary.LittleEndian.Uint16(b[off:]) }

//go:noinline
func r32(b []byte, off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }

func (f *fn) w8(off int, v uint8)   { w8(f.common, off, v) }
func (f *fn) w16(off int, v uint16) { w16(f.common, off, v) }
func (f *fn) w32(off int, v uint32) { w32(f.common, off, v) }
func (f *fn) w64(off int, v uint64) { f.w32(off, uint32(v)); f.w32(off+4, uint32(v>>32)) }
func (f *fn) r8(off int) uint8      { return r8(f.common, off) }
func (f *fn) r16(off int) uint16    { return r16(f.common, off) }
func (f *fn) r32(off int) uint32    { return r32(f.common, off) }

// page is guest memory the program owns, with its guest-physical address.
type page struct {
	b    []byte
	phys uint64
}

// pages allocates n locked pages and looks up their physical addresses.
func pages(n int) []page {
	b, err := unix.Mmap(-1, 0, n*4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE|unix.MAP_LOCKED)
	if err != nil {
		fail("mmap: %v", err)
	}
	pm, err := os.Open("/proc/self/pagemap")
	if err != nil {
		fail("pagemap: %v", err)
	}
	defer pm.Close()
	out := make([]page, n)
	for i := range out {
		p := b[i*4096 : (i+1)*4096]
		p[0] = 1
		va := uint64(uintptr(unsafePointer(p)))
		e := make([]byte, 8)
		if _, err := pm.ReadAt(e, int64(va/4096*8)); err != nil {
			fail("pagemap: %v", err)
		}
		v := binary.LittleEndian.Uint64(e)
		if v&(1<<63) == 0 || v&(1<<55-1) == 0 {
			fail("page %d not present or no PFN (pagemap %#x)", i, v)
		}
		out[i] = page{b: p, phys: (v & (1<<55 - 1)) * 4096}
	}
	return out
}

// Ring layout for a queue of qsize entries (virtio 1.2 §2.7).
const qsize = 16

// queues runs the hostile rounds on addr.
func queues(rng *rand.Rand, addr string) {
	f := take(addr)
	if f.common == nil || f.notify == nil {
		fail("%s: no modern virtio BAR", addr)
	}
	mem := pages(8) // 0 desc, 1 avail, 2 used, 3 indirect, 4-7 buffers
	const rounds = 40
	broken := 0
	for r := range rounds {
		variant := r % 10
		// Reset and renegotiate: ACKNOWLEDGE | DRIVER, VERSION_1, FEATURES_OK.
		f.w8(cfStatus, 0)
		for i := 0; i < 100 && f.r8(cfStatus) != 0; i++ {
			time.Sleep(time.Millisecond)
		}
		// Features the device offers (most rounds: a device refuses
		// FEATURES_OK for others and then never starts), VERSION_1 always.
		f.w8(cfStatus, 1|2)
		var offered [2]uint32
		for sel := range offered {
			f.w32(cfDeviceFeatureSelect, uint32(sel))
			offered[sel] = f.r32(cfDeviceFeature)
		}
		want := [2]uint32{uint32(rng.Uint64()), uint32(rng.Uint64()) | 1}
		if r%8 != 7 {
			want[0] &= offered[0]
			want[1] = want[1]&offered[1]&^(1<<2) | 1 // no RING_PACKED: the rings here are split
		}
		for sel, v := range want {
			f.w32(cfDriverFeatureSelect, uint32(sel))
			f.w32(cfDriverFeature, v)
		}
		f.w8(cfStatus, 1|2|8)
		nq := int(f.r16(cfNumQueues))
		if nq > 4 {
			nq = 4
		}
		for i := range mem {
			for j := range mem[i].b {
				mem[i].b[j] = 0
			}
		}
		for q := range nq {
			f.w16(cfQueueSelect, uint16(q))
			size := uint16(qsize)
			if variant == 8 {
				size = []uint16{0, 3, 0xffff, 1 << 15}[rng.IntN(4)]
			}
			f.w16(cfQueueSize, size)
			desc, avail, used := mem[0].phys, mem[1].phys, mem[2].phys
			switch {
			case variant == 6:
				used = f.phys[firstBar(f)] // the device writes its used ring into MMIO
			case variant == 7:
				desc = 1 << 46 // past any guest RAM
			}
			f.w64(cfQueueDesc, desc)
			f.w64(cfQueueDriver, avail)
			f.w64(cfQueueDevice, used)
			f.w16(cfQueueEnable, 1)
		}
		f.w8(cfStatus, 1|2|8|4)
		started := f.r8(cfStatus)
		fill(rng, variant, mem, f)
		for q := range nq {
			f.w16(cfQueueSelect, uint16(q))
			off := int(f.r16(cfQueueNotifyOff)) * int(f.mult)
			if off+2 <= len(f.notify) {
				w16(f.notify, off, uint16(q))
			}
		}
		if r%3 == 2 {
			f.w8(cfStatus, 0) // reset with requests possibly in flight
			continue
		}
		// The device's workers take the requests asynchronously.
		for i := 0; i < 50; i++ {
			if f.r8(cfStatus)&64 != 0 {
				broken++
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if r < 10 { // what each kind of garbage did, for the test's log
			fmt.Printf("HOSTILE-ROUND %s %d queues=%d status=%#x then %#x\n", addr, variant, nq, started, f.r8(cfStatus))
		}
		_ = r8(f.isr, 0) // reading ISR acknowledges
	}
	f.w8(cfStatus, 0)
	fmt.Printf("HOSTILE-QUEUES %s rounds=%d needs_reset=%d\n", addr, rounds, broken)
}

func firstBar(f *fn) int {
	for i, b := range f.bars {
		if b != nil {
			return i
		}
	}
	return 0
}

// fill writes one kind of garbage into the rings of every queue (they all
// share the same pages) and makes 1..qsize descriptors available.
func fill(rng *rand.Rand, variant int, mem []page, f *fn) {
	desc, avail, ind := mem[0].b, mem[1].b, mem[3].b
	put := func(b []byte, i int, addr uint64, n uint32, flags, next uint16) {
		d := b[i*16:]
		binary.LittleEndian.PutUint64(d, addr)
		binary.LittleEndian.PutUint32(d[8:], n)
		binary.LittleEndian.PutUint16(d[12:], flags)
		binary.LittleEndian.PutUint16(d[14:], next)
	}
	const next, write, indirect = 1, 2, 4
	buf := mem[4].phys
	heads := 1
	switch variant {
	case 0: // a loop: 0 -> 1 -> 0
		put(desc, 0, buf, 64, next, 1)
		put(desc, 1, buf+64, 64, next|write, 0)
	case 1: // an address past guest RAM
		put(desc, 0, 1<<45, 4096, next, 1)
		put(desc, 1, buf, 512, write, 0)
	case 2: // a length past guest RAM
		put(desc, 0, buf, 0xffffffff, next, 1)
		put(desc, 1, buf, 0xfffff000, write, 0)
	case 3: // an indirect table in MMIO space
		put(desc, 0, f.phys[firstBar(f)], 16*8, indirect, 0)
	case 4: // an indirect table with a bad length, and one nested in another
		put(desc, 0, mem[3].phys, 17, indirect, 0)
		put(desc, 1, mem[3].phys, 32, indirect, 0)
		put(ind, 0, mem[3].phys, 32, indirect, 0)
		put(ind, 1, buf, 64, write, 0)
		heads = 2
	case 5: // avail index far ahead of the ring
		put(desc, 0, buf, 64, 0, 0)
		binary.LittleEndian.PutUint16(avail[2:], 0x8000+uint16(rng.IntN(100)))
		return
	case 9: // random rings and indirect tables, but every buffer either
		// inside one of the zeroed buffer pages or past RAM: a device told
		// to write anywhere in RAM (or a balloon told to drop random
		// pages) would crash this guest, which is its right but ends the
		// test. The length too: a random one from a random offset ran
		// into whatever page follows (the pinned pages are not
		// contiguous), and the guest died now and then in the balloon's
		// rounds.
		for _, p := range mem[:4] {
			for i := range p.b[:1024] {
				p.b[i] = byte(rng.Uint32())
			}
		}
		for _, table := range [][]byte{desc, ind} {
			for i := 0; i < 1024/16; i++ {
				off := rng.IntN(4096)
				a, n := mem[4+rng.IntN(4)].phys+uint64(off), uint32(rng.IntN(4096-off+1))
				if rng.IntN(4) == 0 {
					a, n = 1<<45+rng.Uint64()>>20, rng.Uint32()
				}
				binary.LittleEndian.PutUint64(table[i*16:], a)
				binary.LittleEndian.PutUint32(table[i*16+8:], n)
			}
		}
		binary.LittleEndian.PutUint16(avail[2:], uint16(rng.IntN(qsize*2)))
		return
	default: // chains that walk off the table: next past qsize
		put(desc, 0, buf, 64, next, qsize+uint16(rng.IntN(100)))
	}
	for i := range heads {
		binary.LittleEndian.PutUint16(avail[4+2*i:], uint16(i))
	}
	binary.LittleEndian.PutUint16(avail[2:], uint16(heads))
}

// configSpace writes random values to random config space offsets and to
// random offsets of the function's BARs.
func configSpace(rng *rand.Rand, addr string) {
	f := take(addr)
	writes := 0
	for range 200 {
		for bi, b := range f.bars {
			if b == nil || rng.IntN(2) == 0 {
				continue
			}
			off := rng.IntN(len(b)) &^ 3
			if off+4 <= len(b) {
				binary.LittleEndian.PutUint32(b[off:], rng.Uint32())
				writes++
			}
			_ = bi
		}
	}
	for range 300 {
		size := []int{1, 2, 4}[rng.IntN(3)]
		off := uint32(rng.IntN(256/size) * size)
		v := rng.Uint32()
		if rng.IntN(4) == 0 && off >= 0x10 && off < 0x28 {
			v = uint32(rng.IntN(1<<20)) << 12 // a BAR over guest RAM
		}
		f.cfgWrite(off, size, v)
		writes++
	}
	fmt.Printf("HOSTILE-CONFIG %s writes=%d\n", addr, writes)
}

// ports writes and reads the legacy ports the VMM emulates in user space.
func ports(rng *rand.Rand) {
	p, err := os.OpenFile("/dev/port", os.O_RDWR, 0)
	if err != nil {
		fail("%v", err)
	}
	defer p.Close()
	targets := []int64{0x61, 0x70, 0x71, 0x80, 0xe9, 0x402, 0x608, 0x609, 0x60a, 0x60b}
	b := make([]byte, 1)
	for range 2000 {
		port := targets[rng.IntN(len(targets))]
		if rng.IntN(2) == 0 {
			b[0] = byte(rng.Uint32())
			p.WriteAt(b, port)
		} else {
			p.ReadAt(b, port)
		}
	}
	fmt.Println("HOSTILE-PORTS accesses=2000")
}
