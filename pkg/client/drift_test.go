package client

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// jsonKeys lists the JSON object keys a struct type marshals to (its
// fields' json tag names; untagged exported fields by their Go name).
func jsonKeys(t reflect.Type) []string {
	var keys []string
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = f.Name
		}
		keys = append(keys, name)
	}
	slices.Sort(keys)
	return keys
}

// The client's request and reply types are twins of the server's
// (internal/vmm) kept separate so pkg/client imports nothing internal;
// their JSON keys must not drift apart.
func TestTypesMatchServerJSONKeys(t *testing.T) {
	pairs := []struct {
		name           string
		client, server any
	}{
		{"resize", ResizeRequest{}, vmm.Resize{}},
		{"resize-disk", ResizeDiskRequest{}, vmm.ResizeDisk{}},
		{"resize-zone", ResizeZoneRequest{}, vmm.ResizeZone{}},
		{"remove-device", RemoveDeviceRequest{}, vmm.RemoveDevice{}},
		{"DeviceNode", DeviceNode{}, vmm.DeviceNode{}},
		{"PciDeviceInfo", PciDeviceInfo{}, vmm.PciDeviceInfo{}},
		{"VmInfo", VmInfo{}, vmm.VmInfo{}},
		{"PingResponse", PingResponse{}, vmm.PingResponse{}},
	}
	for _, p := range pairs {
		c, s := jsonKeys(reflect.TypeOf(p.client)), jsonKeys(reflect.TypeOf(p.server))
		if len(c) == 0 || !slices.Equal(c, s) {
			t.Errorf("%s: client keys %q, server keys %q", p.name, c, s)
		}
	}
}
