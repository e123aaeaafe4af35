// Package net holds virtio-net end-to-end tests and the network benchmark.
// They run inside the KVM sandbox (`make test-kvm`, `make bench-net`),
// where the test is root in the L1 guest and can create taps, veth pairs
// and network namespaces; the L2 guest boots under the nimbus binary (and
// under QEMU/KVM for the benchmark's reference figures).
package net
