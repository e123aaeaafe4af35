package acpi

import (
	"encoding/binary"
	"fmt"
	"slices"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
)

// amlPkg splits a PkgLength-prefixed object: its body (after the
// PkgLength) and what follows it.
func amlPkg(b []byte) (body, rest []byte, err error) {
	if len(b) == 0 {
		return nil, nil, fmt.Errorf("PkgLength past the end")
	}
	n, hdr := int(b[0]&0x3f), 1+int(b[0]>>6)
	if hdr > 1 {
		if b[0]&0x30 != 0 || len(b) < hdr {
			return nil, nil, fmt.Errorf("bad PkgLength % x", b[:min(len(b), 4)])
		}
		n = int(b[0] & 0x0f)
		for i := 1; i < hdr; i++ {
			n |= int(b[i]) << (4 + 8*(i-1))
		}
	}
	if n < hdr || n > len(b) {
		return nil, nil, fmt.Errorf("PkgLength %d (%d bytes of it) with %d bytes left", n, hdr, len(b))
	}
	return b[hdr:n], b[n:], nil
}

// amlName skips a NameString.
func amlName(b []byte) ([]byte, error) {
	for len(b) > 0 && (b[0] == '\\' || b[0] == '^') {
		b = b[1:]
	}
	n := 4
	switch {
	case len(b) == 0:
		return nil, fmt.Errorf("name past the end")
	case b[0] == 0:
		n = 1
	case b[0] == dualNamePrefix:
		n = 9
	case b[0] == multiNamePrefix:
		if len(b) < 2 {
			return nil, fmt.Errorf("multi-name past the end")
		}
		n = 2 + 4*int(b[1])
	}
	if len(b) < n {
		return nil, fmt.Errorf("name past the end")
	}
	return b[n:], nil
}

// amlData skips a data object (integer, string, buffer, package).
func amlData(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("data past the end")
	}
	size := map[byte]int{zeroOp: 1, oneOp: 1, onesOp: 1, bytePrefix: 2, wordPrefix: 3, dwordPrefix: 5, qwordPrefix: 9}
	if n, ok := size[b[0]]; ok {
		if len(b) < n {
			return nil, fmt.Errorf("integer past the end")
		}
		return b[n:], nil
	}
	switch b[0] {
	case stringPrefix:
		for i := 1; i < len(b); i++ {
			if b[i] == 0 {
				return b[i+1:], nil
			}
		}
		return nil, fmt.Errorf("unterminated string")
	case bufferOp, packageOp:
		_, rest, err := amlPkg(b[1:])
		return rest, err
	}
	return nil, fmt.Errorf("data object %#x", b[0])
}

// amlTerms walks a list of the named objects the DSDT builders emit
// (Name, Scope, Device, Method, Mutex, OperationRegion, Field), checking
// that every PkgLength matches what it encloses; Device and Scope bodies
// are walked too.
func amlTerms(b []byte) error {
	var err error
	for len(b) > 0 {
		op := b[0]
		switch {
		case op == nameOp:
			if b, err = amlName(b[1:]); err == nil {
				b, err = amlData(b)
			}
		case op == scopeOp, op == extOpPrefix && len(b) > 1 && b[1] == deviceOp:
			skip := 1
			if op == extOpPrefix {
				skip = 2
			}
			var body []byte
			if body, b, err = amlPkg(b[skip:]); err == nil {
				if body, err = amlName(body); err == nil {
					err = amlTerms(body)
				}
			}
		case op == methodOp:
			var body []byte
			if body, b, err = amlPkg(b[1:]); err == nil {
				if body, err = amlName(body); err == nil && len(body) == 0 {
					err = fmt.Errorf("method without flags")
				}
			}
		case op == extOpPrefix && len(b) > 1 && b[1] == 0x01: // Mutex
			if b, err = amlName(b[2:]); err == nil {
				if len(b) == 0 {
					return fmt.Errorf("mutex without sync level")
				}
				b = b[1:]
			}
		case op == extOpPrefix && len(b) > 1 && b[1] == 0x80: // OperationRegion
			if b, err = amlName(b[2:]); err == nil && len(b) > 0 {
				if b, err = amlData(b[1:]); err == nil {
					b, err = amlData(b)
				}
			} else if err == nil {
				err = fmt.Errorf("region past the end")
			}
		case op == extOpPrefix && len(b) > 1 && b[1] == 0x81: // Field
			_, b, err = amlPkg(b[2:])
		default:
			return fmt.Errorf("unexpected opcode % x", b[:min(len(b), 2)])
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// checkTables reads back what Build wrote and checks every table's
// signature, length and checksum, that they lie back to back without
// overlap below t.End, and their cross references and entry counts.
func checkTables(t *testing.T, mem []byte, tabs Tables, cfg Config) {
	t.Helper()
	le := binary.LittleEndian
	rsdp := mem[tabs.RSDP : tabs.RSDP+36]
	if string(rsdp[:8]) != "RSD PTR " || sum(rsdp[:20]) != 0 || sum(rsdp) != 0 || le.Uint32(rsdp[20:]) != 36 || le.Uint64(rsdp[24:]) != tabs.XSDT {
		t.Fatalf("RSDP % x", rsdp)
	}
	type span struct{ start, end uint64 }
	spans := []span{{tabs.RSDP, tabs.RSDP + 36}}
	read := func(addr uint64, sig string) []byte {
		if addr+headerSize > uint64(len(mem)) || string(mem[addr:addr+4]) != sig {
			t.Fatalf("no %s at %#x", sig, addr)
		}
		n := uint64(le.Uint32(mem[addr+4:]))
		if n < headerSize || addr+n > tabs.End {
			t.Fatalf("%s at %#x: length %d past the end %#x", sig, addr, n, tabs.End)
		}
		tbl := mem[addr : addr+n]
		if sum(tbl) != 0 {
			t.Fatalf("%s checksum: bytes sum to %#x", sig, sum(tbl))
		}
		spans = append(spans, span{addr, addr + n})
		return tbl
	}
	xsdt := read(tabs.XSDT, "XSDT")
	if len(xsdt) != headerSize+24 || le.Uint64(xsdt[36:]) != tabs.FADT || le.Uint64(xsdt[44:]) != tabs.MADT || le.Uint64(xsdt[52:]) != tabs.MCFG {
		t.Fatalf("XSDT % x, tables %+v", xsdt[36:], tabs)
	}
	fadt := read(tabs.FADT, "FACP")
	if len(fadt) != 276 || le.Uint64(fadt[140:]) != tabs.DSDT {
		t.Fatalf("FADT of %d bytes, X_DSDT %#x", len(fadt), le.Uint64(fadt[140:]))
	}
	dsdt := read(tabs.DSDT, "DSDT")
	if err := amlTerms(dsdt[headerSize:]); err != nil {
		t.Fatalf("DSDT AML: %v", err)
	}
	madt := read(tabs.MADT, "APIC")
	var cpus, enabled int
	for b := madt[44:]; len(b) > 0; {
		if len(b) < 2 || b[1] < 2 || int(b[1]) > len(b) {
			t.Fatalf("MADT entry % x overruns the table", b[:min(len(b), 4)])
		}
		switch e := b[:b[1]]; e[0] {
		case madtLocalAPIC:
			cpus++
			if le.Uint32(e[4:])&madtEnabled != 0 {
				enabled++
			}
		case madtLocalX2APIC:
			cpus++
			if le.Uint32(e[8:])&madtEnabled != 0 {
				enabled++
			}
		}
		b = b[b[1]:]
	}
	if cpus != cfg.MaxCPUs || enabled != cfg.BootCPUs {
		t.Fatalf("MADT: %d vCPUs, %d enabled; want %d, %d", cpus, enabled, cfg.MaxCPUs, cfg.BootCPUs)
	}
	mcfg := read(tabs.MCFG, "MCFG")
	if (len(mcfg)-44)%16 != 0 || (len(mcfg)-44)/16 != max(len(cfg.PCISegments), 1) {
		t.Fatalf("MCFG of %d bytes for %d segments", len(mcfg), len(cfg.PCISegments))
	}
	slices.SortFunc(spans, func(a, b span) int { return int(a.start) - int(b.start) })
	for i := 1; i < len(spans); i++ {
		if spans[i].start < spans[i-1].end {
			t.Fatalf("tables overlap: %+v", spans)
		}
	}
	if spans[len(spans)-1].end != tabs.End || tabs.End > x86.SMBIOSStart {
		t.Fatalf("tables end at %#x, End says %#x", spans[len(spans)-1].end, tabs.End)
	}
}

// FuzzBuild builds the ACPI tables from fuzzer-chosen vCPU counts, PCI
// segments and windows, serial IRQ and the GED, PCI, CPU and memory
// hotplug blocks (their register addresses, CPU and slot counts), within
// what the configuration allows (at most 8192 vCPUs). It must fail with
// ErrTables (or ErrAML) or write consistent tables: see checkTables.
func FuzzBuild(f *testing.F) {
	win := make([]byte, 32)
	binary.LittleEndian.PutUint32(win[0:], 0xc000_0000)
	binary.LittleEndian.PutUint32(win[4:], 640<<20)
	binary.LittleEndian.PutUint32(win[8:], 1<<28)
	binary.LittleEndian.PutUint32(win[12:], 1<<18)
	binary.LittleEndian.PutUint32(win[16:], 0xd000_0000)
	binary.LittleEndian.PutUint32(win[20:], 1<<20)
	f.Add(uint16(1), uint16(1), uint8(0), uint32(0), uint8(0), []byte(nil), uint64(0), uint32(0), uint64(0), uint64(0), uint16(0), uint16(0))
	f.Add(uint16(2), uint16(4), uint8(0xff), uint32(4), uint8(2), win, uint64(0xfed0_0000), uint32(5), uint64(0xfeb0_0000), uint64(0xfeb0_1000), uint16(4), uint16(8))
	f.Add(uint16(255), uint16(300), uint8(0x3f), uint32(0), uint8(1), win, uint64(0xfed0_0000), uint32(9), uint64(0xfeb0_0000), uint64(0xfeb0_1000), uint16(300), uint16(1000))
	mem := make(flatMem, 1<<20)
	f.Fuzz(func(t *testing.T, boot, maxCPUs uint16, flags uint8, serialIRQ uint32, nseg uint8, win []byte,
		gedBase uint64, gedIRQ uint32, hpBase, cpuBase uint64, hpCPUs, slots uint16) {
		cfg := Config{BootCPUs: int(boot % 8193), MaxCPUs: int(maxCPUs % 8193), X2APIC: flags&1 != 0, Serial: flags&2 != 0, SerialIRQ: serialIRQ}
		for i := range int(nseg % 9) {
			var c [16]byte
			if 16*i < len(win) {
				copy(c[:], win[16*i:])
			}
			le := binary.LittleEndian
			cfg.PCISegments = append(cfg.PCISegments, PCISegment{
				Win32: x86.Region{Start: uint64(le.Uint32(c[0:])), Size: uint64(le.Uint32(c[4:]))},
				Win64: x86.Region{Start: uint64(le.Uint32(c[8:])) << 12, Size: uint64(le.Uint32(c[12:])) << 12},
			})
		}
		if flags&4 != 0 {
			cfg.GED = &GED{Base: gedBase, IRQ: gedIRQ}
		}
		if flags&8 != 0 {
			cfg.PCIHotplug = &PCIHotplug{Base: hpBase}
		}
		if flags&16 != 0 {
			cfg.CPUHotplug = &CPUHotplug{Base: cpuBase, MaxCPUs: int(hpCPUs % 4100)}
			if flags&64 != 0 {
				cfg.CPUHotplug.APICID = func(cpu uint32) uint32 { return 2*cpu + 1 }
				cfg.CPUHotplug.ProximityDomain = func(cpu uint32) uint32 { return cpu % 4 }
			}
		}
		if flags&32 != 0 {
			cfg.MemoryHotplug = &MemoryHotplug{Base: hpBase ^ cpuBase, Slots: int(slots % 1010)}
		}
		clear(mem[x86.RSDPPointer:])
		tabs, err := Build(mem, cfg)
		if err != nil {
			return
		}
		if cfg.MaxCPUs == 0 {
			cfg.MaxCPUs = cfg.BootCPUs
		}
		checkTables(t, mem, tabs, cfg)
	})
}
