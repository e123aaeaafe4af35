package acpi

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
)

// Golden AML produced by running upstream's code verbatim (v53.0
// vmm/src/cpu.rs: Cpu, CpuNotify, CpuMethods and `impl Aml for
// CpuManager`, x86-64, dynamic vCPUs, acpi_address 0xfeb02000) against
// acpi_tables 0.2.1: upstreamCPUs2 for max_vcpus 2 without a topology or
// NUMA nodes, upstreamCPUs5 for max_vcpus 5 with topology (2 threads, 2
// cores, 1 die, 2 packages) and vCPU n in proximity domain n%2.
var (
	upstreamCPUs2 = unhex(`
	5b82490b2e5f53425f50524553085f4849440c41d00a06085f5549440d43505520486f74706c756720436f6e74726f6c
	6c6572005b0143504c4b00085f43525311330a308a2b00000c0100000000000000000020b0fe000000000b20b0fe0000
	000000000000000000000c0000000000000079005b8050525354000c0020b0fe0a0c5b8123505253544100204350454e
	0143494e530143524d560143454a3001000443434d44085b811250525354034353454c20002043444154205b8248232e
	5f53425f43505553085f4849440d414350493030313000085f4349440c41d00a0514480543535441095b235c2f035f53
	425f5052455343504c4bffff70685c2f035f53425f505245534353454c700060a016935c2f035f53425f505245534350
	454e01700a0f605b275c2f035f53425f5052455343504c4ba460141c435446590aa00a936800864330303069a00a9368
	01864330303169144d0443454a30095b235c2f035f53425f5052455343504c4bffff70685c2f035f53425f5052455343
	53454c70015c2f035f53425f5052455343454a305b275c2f035f53425f5052455343504c4b144f094353434e085b235c
	2f035f53425f5052455343504c4bffff700060a2400795600a0270605c2f035f53425f505245534353454ca029935c2f
	035f53425f5052455343494e530143544659600170015c2f035f53425f5052455343494e53a02a935c2f035f53425f50
	52455343524d560143544659600a0370015c2f035f53425f5052455343524d56726001605b275c2f035f53425f505245
	5343504c4b5b82460543303030085f4849440d414350493030303700085f55494400140c5f53544100a4435354410014
	085f50584d00a400085f4d415411130a1009100000000000000100000000000000140b5f454a300143454a30005b8246
	0543303031085f4849440d414350493030303700085f55494401140c5f53544100a4435354410114085f50584d00a400
	085f4d415411130a1009100000010000000100000001000000140b5f454a300143454a3001`)
	upstreamCPUs5 = unhex(`
	5b82490b2e5f53425f50524553085f4849440c41d00a06085f5549440d43505520486f74706c756720436f6e74726f6c
	6c6572005b0143504c4b00085f43525311330a308a2b00000c0100000000000000000020b0fe000000000b20b0fe0000
	000000000000000000000c0000000000000079005b8050525354000c0020b0fe0a0c5b8123505253544100204350454e
	0143494e530143524d560143454a3001000443434d44085b811250525354034353454c20002043444154205b824e362e
	5f53425f43505553085f4849440d414350493030313000085f4349440c41d00a0514480543535441095b235c2f035f53
	425f5052455343504c4bffff70685c2f035f53425f505245534353454c700060a016935c2f035f53425f505245534350
	454e01700a0f605b275c2f035f53425f5052455343504c4ba460144104435446590aa00a936800864330303069a00a93
	6801864330303169a00b93680a02864330303269a00b93680a03864330303369a00b93680a04864330303469144d0443
	454a30095b235c2f035f53425f5052455343504c4bffff70685c2f035f53425f505245534353454c70015c2f035f5342
	5f5052455343454a305b275c2f035f53425f5052455343504c4b144f094353434e085b235c2f035f53425f5052455343
	504c4bffff700060a2400795600a0570605c2f035f53425f505245534353454ca029935c2f035f53425f505245534349
	4e530143544659600170015c2f035f53425f5052455343494e53a02a935c2f035f53425f5052455343524d5601435446
	59600a0370015c2f035f53425f5052455343524d56726001605b275c2f035f53425f5052455343504c4b5b8246054330
	3030085f4849440d414350493030303700085f55494400140c5f53544100a4435354410014085f50584d00a400085f4d
	415411130a1009100000000000000100000000000000140b5f454a300143454a30005b82460543303031085f4849440d
	414350493030303700085f55494401140c5f53544100a4435354410114085f50584d00a401085f4d415411130a100910
	0000010000000100000001000000140b5f454a300143454a30015b82490543303032085f4849440d4143504930303037
	00085f5549440a02140d5f53544100a4435354410a0214085f50584d00a400085f4d415411130a100910000002000000
	0100000002000000140c5f454a300143454a300a025b82490543303033085f4849440d414350493030303700085f5549
	440a03140d5f53544100a4435354410a0314085f50584d00a401085f4d415411130a1009100000030000000100000003
	000000140c5f454a300143454a300a035b82490543303034085f4849440d414350493030303700085f5549440a04140d
	5f53544100a4435354410a0414085f50584d00a400085f4d415411130a1009100000040000000100000004000000140c
	5f454a300143454a300a04`)
)

func TestCPUHotplugMatchesUpstream(t *testing.T) {
	terms, err := CPUHotplug{Base: 0xfeb02000, MaxCPUs: 2}.Terms()
	if err != nil {
		t.Fatal(err)
	}
	if len(terms) != 2 {
		t.Fatalf("%d terms, want PRES, CPUS", len(terms))
	}
	expect(t, "PRES+CPUS, 2 vCPUs", mustMarshal(t, terms...), upstreamCPUs2)

	topo := x86.Topology{ThreadsPerCore: 2, CoresPerDie: 2, DiesPerPackage: 1, Packages: 2}
	terms, err = CPUHotplug{
		Base:            0xfeb02000,
		MaxCPUs:         5,
		APICID:          topo.X2APICID,
		ProximityDomain: func(cpu uint32) uint32 { return cpu % 2 },
	}.Terms()
	if err != nil {
		t.Fatal(err)
	}
	expect(t, "PRES+CPUS, 5 vCPUs with topology", mustMarshal(t, terms...), upstreamCPUs5)
}

// TestCPUHotplugFragments checks pieces against encodings worked out by
// hand from ACPI 6.5 chapter 20 and 5.2.12.12.
func TestCPUHotplugFragments(t *testing.T) {
	terms, err := CPUHotplug{Base: 0xfeb02000, MaxCPUs: 0x10b, APICID: func(c uint32) uint32 { return c + 0x100 }}.Terms()
	if err != nil {
		t.Fatal(err)
	}
	pres, cpus := mustMarshal(t, terms[0]), mustMarshal(t, terms[1])
	path := func(segs ...string) []byte { // \_SB_.PRES.x
		return append([]byte{0x5c, 0x2f, 0x03, '_', 'S', 'B', '_', 'P', 'R', 'E', 'S'}, strings.Join(segs, "")...)
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, f := range []struct {
		what string
		in   []byte
		frag []byte
	}{
		{"OperationRegion (PRST, SystemMemory, 0xFEB02000, 0x0C)", pres,
			[]byte{0x5b, 0x80, 'P', 'R', 'S', 'T', 0x00, 0x0c, 0x00, 0x20, 0xb0, 0xfe, 0x0a, 0x0c}},
		// FieldFlags ByteAcc 1 | WriteAsZeros 2<<5 = 0x41; ReservedField 0x00 PkgLength(32)
		{"Field (PRST, ByteAcc, NoLock, WriteAsZeros)", pres, []byte{0x5b, 0x81, 0x23, 'P', 'R', 'S', 'T', 0x41,
			0x00, 0x20, 'C', 'P', 'E', 'N', 1, 'C', 'I', 'N', 'S', 1, 'C', 'R', 'M', 'V', 1, 'C', 'E', 'J', '0', 1, 0x00, 4, 'C', 'C', 'M', 'D', 8}},
		{"Field (PRST, DWordAcc, NoLock, Preserve)", pres, []byte{0x5b, 0x81, 0x12, 'P', 'R', 'S', 'T', 0x03,
			'C', 'S', 'E', 'L', 0x20, 0x00, 0x20, 'C', 'D', 'A', 'T', 0x20}},
		{"Name (_HID, \"ACPI0010\")", cpus, append([]byte{0x08, '_', 'H', 'I', 'D', 0x0d}, "ACPI0010\x00"...)},
		// body 5+19+17+17+17 = 75 bytes, PkgLength 77 in two bytes
		{"CEJ0 method", cpus, cat([]byte{0x14, 0x4d, 0x04, 'C', 'E', 'J', '0', 0x09},
			[]byte{0x5b, 0x23}, path("CPLK"), []byte{0xff, 0xff},
			[]byte{0x70, 0x68}, path("CSEL"),
			[]byte{0x70, 0x01}, path("CEJ0"),
			[]byte{0x5b, 0x27}, path("CPLK"))},
		// While ((Local0 < 0x010B)): the bound is a WordConst
		{"CSCN loop bound", cpus, []byte{0x95, 0x60, 0x0b, 0x0b, 0x01}},
		{"CTFY entry for C10A", cpus, []byte{0xa0, 0x0c, 0x93, 0x68, 0x0b, 0x0a, 0x01, 0x86, 'C', '1', '0', 'A', 0x69}},
		// Device (C10A): _UID 0x010A, _STA { Return (CSTA (0x010A)) },
		// _MAT type 9 length 16, x2APIC id 0x20A, Enabled, UID 0x10A.
		// Body 4+15+8+15+9+25+14 = 90 bytes, PkgLength 92 in two bytes.
		{"C10A", cpus, cat(
			[]byte{0x5b, 0x82, 0x4c, 0x05, 'C', '1', '0', 'A'},
			append([]byte{0x08, '_', 'H', 'I', 'D', 0x0d}, "ACPI0007\x00"...),
			[]byte{0x08, '_', 'U', 'I', 'D', 0x0b, 0x0a, 0x01},
			[]byte{0x14, 0x0e, '_', 'S', 'T', 'A', 0x00, 0xa4, 'C', 'S', 'T', 'A', 0x0b, 0x0a, 0x01},
			[]byte{0x14, 0x08, '_', 'P', 'X', 'M', 0x00, 0xa4, 0x00},
			[]byte{0x08, '_', 'M', 'A', 'T', 0x11, 0x13, 0x0a, 0x10,
				0x09, 0x10, 0x00, 0x00, 0x0a, 0x02, 0, 0, 0x01, 0, 0, 0, 0x0a, 0x01, 0, 0},
			[]byte{0x14, 0x0d, '_', 'E', 'J', '0', 0x01, 'C', 'E', 'J', '0', 0x0b, 0x0a, 0x01})},
	} {
		if !bytes.Contains(f.in, f.frag) {
			t.Errorf("%s: % x not found", f.what, f.frag)
		}
	}
}

func TestCPUHotplugRejectsBadConfig(t *testing.T) {
	for _, c := range []CPUHotplug{
		{Base: 0, MaxCPUs: 1},
		{Base: ^uint64(0) - 4, MaxCPUs: 1},
		{Base: 0xfeb02000, MaxCPUs: 0},
		{Base: 0xfeb02000, MaxCPUs: 0x1001},
	} {
		if _, err := c.Terms(); !errors.Is(err, ErrTables) {
			t.Errorf("%+v: err = %v, want ErrTables", c, err)
		}
	}
	terms, err := CPUHotplug{Base: 0xfeb02000, MaxCPUs: 0x1000}.Terms()
	if err != nil {
		t.Fatal(err)
	}
	if b := mustMarshal(t, terms...); !bytes.Contains(b, []byte("CFFF")) {
		t.Error("4096 vCPUs: no CFFF")
	}
}

// TestCPUHotplugIASL disassembles and recompiles a DSDT carrying both
// hotplug controllers, spliced as upstream orders them.
func TestCPUHotplugIASL(t *testing.T) {
	phpr, bridge, err := PCIHotplug{Base: 0xfeb01000}.Terms()
	if err != nil {
		t.Fatal(err)
	}
	ged, err := GED{Base: 0xfeb00000, IRQ: 5, CPUHotplug: true, PCIHotplug: true}.Terms()
	if err != nil {
		t.Fatal(err)
	}
	cpus, err := CPUHotplug{Base: 0xfeb02000, MaxCPUs: 3}.Terms()
	if err != nil {
		t.Fatal(err)
	}
	pci0 := append([]Term{
		Name("_HID", EISAID("PNP0A08")),
		Name("_CID", EISAID("PNP0A03")),
		Name("_ADR", Int(0)),
		Name("_SEG", Int(0)),
		Name("_UID", Int(0)),
	}, bridge...)
	terms := append([]Term{Name("_S5_", Package(Int(5))), phpr, Device("_SB_.PC00", pci0...)}, ged...)
	terms = append(terms, cpus...)
	table, err := (&SDT{Signature: "DSDT", Revision: 6, OEMTableID: "CHDSDT", Body: mustMarshal(t, terms...)}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	asl := iaslRoundTrip(t, table)
	for _, want := range []string{
		`Device (_SB.PRES)`,
		`Mutex (CPLK, 0x00)`,
		`OperationRegion (PRST, SystemMemory, 0xFEB02000, 0x0C)`,
		`Field (PRST, ByteAcc, NoLock, WriteAsZeros)`,
		`Offset (0x04), `,
		`Field (PRST, DWordAcc, NoLock, Preserve)`,
		`Device (_SB.CPUS)`,
		`Name (_HID, "ACPI0010" /* Processor Container Device */)`,
		`Method (CSTA, 1, Serialized)`,
		`If ((\_SB.PRES.CPEN == One))`,
		`Method (CTFY, 2, Serialized)`,
		`Notify (C002, Arg1)`,
		`\_SB.PRES.CEJ0 = One`,
		`While ((Local0 < 0x03))`,
		`CTFY (Local0, 0x03)`,
		`Device (C002)`,
		`Name (_HID, "ACPI0007" /* Processor Device */)`,
		`Return (CSTA (0x02))`,
		`CEJ0 (0x02)`,
		`\_SB.CPUS.CSCN ()`,
		`\_SB.PHPR.PSCN ()`,
	} {
		if !strings.Contains(asl, want) {
			t.Errorf("disassembly lacks %q", want)
		}
	}
}
