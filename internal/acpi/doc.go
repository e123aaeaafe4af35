// Package acpi builds the ACPI tables Cloud Hypervisor gives an x86-64
// guest (RSDP, XSDT, FADT, DSDT, MADT, MCFG) and the small AML encoder the
// DSDT needs. Layouts follow the ACPI 6.5 specification; content and
// placement follow upstream's vmm/src/acpi.rs and the acpi_tables crate.
package acpi
