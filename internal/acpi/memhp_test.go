package acpi

import (
	"bytes"
	"errors"
	"testing"
)

// upstreamMHPC is \_SB_.MHPC as upstream v53.0 writes it (vmm/src/
// memory_manager.rs, `impl Aml for MemoryManager` with its 8 slots),
// produced by running that code verbatim against acpi_tables 0.2.1 with
// acpi_address 0x3fff_fffe_f000 (its address for 46 physical address bits).
var upstreamMHPC = unhex(`
	5b82464e2e5f53425f4d485043085f4849440c41d00a06085f5549440d4d656d6f727920486f74706c756720436f6e74
	726f6c6c6572005b014d4c434b00085f43525311330a308a2b00000c01000000000000000000f0feffff3f000017f0fe
	ffff3f00000000000000000000180000000000000079005b804d485052000e00f0feffff3f00000a185b811a4d485052
	034d48424c204d484248204d484c4c204d484c48205b810e4d485052030040084d485058205b811d4d4850524100400a
	4d454e5f014d494e53014d524d56014d454a30015b81154d485052034d53454c204d4f4556204d4f5343201445064d54
	46590aa00a936800864d30303069a00a936801864d30303169a00b93680a02864d30303269a00b93680a03864d303033
	69a00b93680a04864d30303469a00b93680a05864d30303569a00b93680a06864d30303669a00b93680a07864d303037
	691449084d53434e085b234d4c434bffff700060a2400795600a0870605c2f035f53425f4d4850434d53454ca029935c
	2f035f53425f4d4850434d494e53014d544659600170015c2f035f53425f4d4850434d494e53a02a935c2f035f53425f
	4d4850434d524d56014d544659600a0370015c2f035f53425f4d4850434d524d56726001605b274d4c434b1442044d53
	5441095b234d4c434bffff70685c2f035f53425f4d4850434d53454c700060a016935c2f035f53425f4d4850434d454e
	5f01700a0f605b274d4c434ba460144f124d435253095b234d4c434bffff70685c2f035f53425f4d4850434d53454c08
	4d52363411330a308a2b00000c0300000000000000000000000000000000feffffffffffffff0000000000000000ffff
	ffffffffffff79008f4d5236340a0e4d494e4c8a4d5236340a124d494e488f4d5236340a164d41584c8a4d5236340a1a
	4d4158488f4d5236340a264c454e4c8a4d5236340a2a4c454e48705c2f035f53425f4d4850434d48424c4d494e4c705c
	2f035f53425f4d4850434d4842484d494e48705c2f035f53425f4d4850434d484c4c4c454e4c705c2f035f53425f4d48
	50434d484c484c454e48724d494e4c4c454e4c4d41584c724d494e484c454e484d415848a014954d41584c4d494e4c72
	014d4158484d415848744d41584c014d41584c5b274d4c434ba44d5236345b822f4d303030085f4849440c41d00c8008
	5f55494400140c5f53544100a44d53544100140c5f43525300a44d435253005b822f4d303031085f4849440c41d00c80
	085f55494401140c5f53544100a44d53544101140c5f43525300a44d435253015b82324d303032085f4849440c41d00c
	80085f5549440a02140d5f53544100a44d5354410a02140d5f43525300a44d4352530a025b82324d303033085f484944
	0c41d00c80085f5549440a03140d5f53544100a44d5354410a03140d5f43525300a44d4352530a035b82324d30303408
	5f4849440c41d00c80085f5549440a04140d5f53544100a44d5354410a04140d5f43525300a44d4352530a045b82324d
	303035085f4849440c41d00c80085f5549440a05140d5f53544100a44d5354410a05140d5f43525300a44d4352530a05
	5b82324d303036085f4849440c41d00c80085f5549440a06140d5f53544100a44d5354410a06140d5f43525300a44d43
	52530a065b82324d303037085f4849440c41d00c80085f5549440a07140d5f53544100a44d5354410a07140d5f435253
	00a44d4352530a07`)

func TestMemoryHotplugMatchesUpstream(t *testing.T) {
	term, err := MemoryHotplug{Base: 0x3fff_fffe_f000, Slots: 8}.Term()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Marshal(term)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, upstreamMHPC) {
		t.Fatalf("MHPC differs from upstream's at byte %d:\n got %x\nwant %x", firstDiff(got, upstreamMHPC), got, upstreamMHPC)
	}
}

func TestMemoryHotplugRejectsBadInput(t *testing.T) {
	for _, m := range []MemoryHotplug{{Base: 0, Slots: 8}, {Base: ^uint64(0) - 4, Slots: 8}, {Base: 0xfeb03000, Slots: 0}} {
		if _, err := m.Term(); !errors.Is(err, ErrTables) {
			t.Errorf("%+v: %v", m, err)
		}
	}
}

// TestDSDTWithMemoryHotplug: the controller goes last and the GED's ESCN
// calls its MSCN on bit 1 only when it exists.
func TestDSDTWithMemoryHotplug(t *testing.T) {
	mscn := []byte("\\/\x03_SB_MHPCMSCN")
	cfg := Config{BootCPUs: 1, GED: &GED{Base: 0xfeb00000, IRQ: 5}}
	without, err := DSDT(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(without.Body, mscn) || bytes.Contains(without.Body, []byte("MHPC")) {
		t.Fatal("DSDT without memory hotplug names MHPC")
	}
	cfg.MemoryHotplug = &MemoryHotplug{Base: 0x3fff_fffe_f000, Slots: 8}
	with, err := DSDT(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(with.Body, upstreamMHPC) {
		t.Fatal("MHPC is not the DSDT's last object")
	}
	if !bytes.Contains(with.Body, mscn) {
		t.Fatal("ESCN does not call \\_SB_.MHPC.MSCN")
	}
}

// firstDiff is the index of the first byte where a and b differ.
func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
