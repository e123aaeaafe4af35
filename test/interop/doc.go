// Package interop holds tests that replay real clients of the Cloud
// Hypervisor API and command line (Kata Containers, libvirt, Flintlock,
// Conch) against Nimbus, byte for byte where the client is hand-written and
// through the client's own generated code where it has one. The facts they
// encode are in /work/shared/reference/clients.md; the package has no
// non-test code.
package interop
