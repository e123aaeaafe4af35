package acpi

import "testing"

func BenchmarkBuild(b *testing.B) {
	mem := make(flatMem, 1<<20)
	cfg := Config{BootCPUs: 8, MaxCPUs: 32, Serial: true}
	for b.Loop() {
		if _, err := Build(mem, cfg); err != nil {
			b.Fatal(err)
		}
	}
}
