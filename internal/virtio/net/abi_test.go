package net_test

import (
	"bytes"
	"testing"

	vnet "github.com/nimbus-vmm/nimbus/internal/virtio/net"
)

// TestConfigBytes checks struct virtio_net_config's layout (§5.1.4).
func TestConfigBytes(t *testing.T) {
	c := vnet.Config{MAC: [6]byte{1, 2, 3, 4, 5, 6}, Status: 1, MaxVirtqueuePairs: 0x0203, MTU: 1500}
	got, _ := c.MarshalBinary()
	want := []byte{1, 2, 3, 4, 5, 6, 0x01, 0x00, 0x03, 0x02, 0xdc, 0x05}
	if !bytes.Equal(got, want) {
		t.Fatalf("got % x want % x", got, want)
	}
}
