package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// Root is the path prefix of every route (upstream's HTTP_ROOT).
const Root = "/api/v1/"

// routeKind says how a route checks its method and body; the rules are
// upstream's (vmm/src/api/http/http_endpoint.rs).
type routeKind int

const (
	// kindGet: a VmActionHandler GET route (vm.counters).
	kindGet routeKind = iota
	// kindPut: a VmActionHandler PUT route without a body.
	kindPut
	// kindPutBody: a VmActionHandler PUT route that needs a body.
	kindPutBody
	// kindSpecial: vm.create, vm.info, vmm.ping, vmm.shutdown: own
	// handlers that answer any wrong method with ["Bad Request"].
	kindSpecial
)

// route is one endpoint. build turns the request body and the fds received
// with it into a command; it returns the fds the command took (the caller
// closes the rest).
type route struct {
	method string
	kind   routeKind
	// apiText is upstream's ApiError Display for failures of this route.
	apiText string
	build   func(body []byte, fds []*os.File) (vmm.Command, []*os.File, error)
}

// errDecode wraps a body that is not valid JSON for the route; it renders
// as upstream's ["Failed to deserialize JSON", <detail>].
type errDecode struct{ err error }

func (e *errDecode) Error() string { return e.err.Error() }

// errFdCount is a request with more fds than the route accepts.
var errFdCount = errors.New("too many file descriptors")

func noBody(c vmm.Command) func([]byte, []*os.File) (vmm.Command, []*os.File, error) {
	return func([]byte, []*os.File) (vmm.Command, []*os.File, error) { return c, nil, nil }
}

// decodeInto decodes body into v with config.DecodeInto (upstream's serde
// defaults and errors), plus two serde rules Go's decoder lacks for the
// small request structs of internal/vmm: null is not a struct, and the
// listed fields are required.
func decodeInto[T any](body []byte, v *T, required ...string) error {
	if bytes.Equal(bytes.TrimSpace(body), []byte("null")) {
		return &errDecode{fmt.Errorf("invalid type: null, expected struct %s", reflect.TypeFor[T]().Name())}
	}
	if err := config.DecodeInto(body, v); err != nil {
		var je *config.JSONError
		if errors.As(err, &je) {
			return &errDecode{errors.New(je.Detail)}
		}
		return &errDecode{err}
	}
	if len(required) > 0 {
		var present map[string]json.RawMessage
		if err := json.Unmarshal(body, &present); err != nil {
			return &errDecode{err}
		}
		for _, f := range required {
			if _, ok := present[f]; !ok {
				return &errDecode{fmt.Errorf("missing field `%s`", f)}
			}
		}
	}
	return nil
}

// bodyCmd builds a route whose body decodes into the command itself.
func bodyCmd[T vmm.Command](required ...string) func([]byte, []*os.File) (vmm.Command, []*os.File, error) {
	return func(body []byte, _ []*os.File) (vmm.Command, []*os.File, error) {
		var c T
		if err := decodeInto(body, &c, required...); err != nil {
			return nil, nil, err
		}
		return c, nil, nil
	}
}

// cfgCmd builds a route whose body is a config struct wrapped by mk.
func cfgCmd[C any](mk func(C) vmm.Command) func([]byte, []*os.File) (vmm.Command, []*os.File, error) {
	return func(body []byte, _ []*os.File) (vmm.Command, []*os.File, error) {
		var c C
		if err := decodeInto(body, &c); err != nil {
			return nil, nil, err
		}
		return mk(c), nil, nil
	}
}

// clearField zeroes the field tagged json:"name" of the struct *v, if it
// has one: upstream ignores fd numbers sent inside JSON bodies, only fds
// received over SCM_RIGHTS count.
func clearField(v any, names ...string) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return
	}
	clearValue(rv.Elem(), names)
}

func clearValue(rv reflect.Value, path []string) {
	switch rv.Kind() {
	case reflect.Pointer:
		if !rv.IsNil() {
			clearValue(rv.Elem(), path)
		}
		return
	case reflect.Slice:
		for i := 0; i < rv.Len(); i++ {
			clearValue(rv.Index(i), path)
		}
		return
	case reflect.Struct:
	default:
		return
	}
	t := rv.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := bytesCut(f.Tag.Get("json"), ',')
		if name != path[0] || !f.IsExported() {
			continue
		}
		fv := rv.Field(i)
		if len(path) == 1 {
			fv.SetZero()
		} else {
			clearValue(fv, path[1:])
		}
	}
}

func bytesCut(s string, sep byte) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func decodeVmConfig(body []byte) (*config.VmConfig, error) {
	var c config.VmConfig
	if err := decodeInto(body, &c); err != nil {
		return nil, err
	}
	// vm.create takes no fds: numbers in the body are cleared as upstream does.
	clearField(&c, "net", "fds")
	return &c, nil
}

// routes maps the name after /api/v1/ to its endpoint: upstream's 31
// HTTP_ROUTES plus the /vmm.nmi spelling of older vendored specs.
var routes = map[string]*route{
	"vmm.ping":     {method: "GET", kind: kindSpecial, build: noBody(vmm.Ping{})},
	"vmm.shutdown": {method: "PUT", kind: kindSpecial, apiText: "The VMM could not shutdown", build: noBody(vmm.ShutdownVMM{})},
	"vm.info":      {method: "GET", kind: kindSpecial, apiText: "The VM info is not available", build: noBody(vmm.Info{})},
	"vm.create": {method: "PUT", kind: kindSpecial, apiText: "The VM could not be created",
		build: func(body []byte, _ []*os.File) (vmm.Command, []*os.File, error) {
			c, err := decodeVmConfig(body)
			if err != nil {
				return nil, nil, err
			}
			return vmm.CreateVM{Config: c}, nil, nil
		}},
	"vm.counters":     {method: "GET", kind: kindGet, apiText: "The VM info is not available", build: noBody(vmm.GetCounters{})},
	"vm.boot":         {method: "PUT", kind: kindPut, apiText: "The VM could not boot", build: noBody(vmm.BootVM{})},
	"vm.delete":       {method: "PUT", kind: kindPut, apiText: "The VM could not be deleted", build: noBody(vmm.DeleteVM{})},
	"vm.shutdown":     {method: "PUT", kind: kindPut, apiText: "The VM could not shutdown", build: noBody(vmm.ShutdownVM{})},
	"vm.reboot":       {method: "PUT", kind: kindPut, apiText: "The VM could not reboot", build: noBody(vmm.RebootVM{})},
	"vm.pause":        {method: "PUT", kind: kindPut, apiText: "The VM could not be paused", build: noBody(vmm.PauseVM{})},
	"vm.resume":       {method: "PUT", kind: kindPut, apiText: "The VM could not resume", build: noBody(vmm.ResumeVM{})},
	"vm.power-button": {method: "PUT", kind: kindPut, apiText: "Error triggering power button", build: noBody(vmm.PowerButton{})},
	"vm.nmi":          {method: "PUT", kind: kindPut, apiText: "Error triggering NMI", build: noBody(vmm.NMI{})},
	"vmm.nmi":         {method: "PUT", kind: kindPut, apiText: "Error triggering NMI", build: noBody(vmm.NMI{})},
	"vm.resize":       {method: "PUT", kind: kindPutBody, apiText: "The VM could not be resized", build: bodyCmd[vmm.Resize]()},
	"vm.resize-disk": {method: "PUT", kind: kindPutBody, apiText: "The disk could not be resized",
		build: bodyCmd[vmm.ResizeDisk]("id", "desired_size")},
	"vm.resize-zone": {method: "PUT", kind: kindPutBody, apiText: "The memory zone could not be resized",
		build: bodyCmd[vmm.ResizeZone]("id", "desired_ram")},
	"vm.remove-device": {method: "PUT", kind: kindPutBody, apiText: "The device could not be removed from the VM",
		build: bodyCmd[vmm.RemoveDevice]("id")},
	"vm.snapshot": {method: "PUT", kind: kindPutBody, apiText: "The VM could not be snapshotted",
		build: bodyCmd[vmm.Snapshot]("destination_url")},
	// No vm.coredump: upstream registers it only with the guest_debug
	// feature, which its default build lacks, so there it is 404
	// ["Not Found"] like any unknown path (reference §1.4).
	"vm.add-disk": {method: "PUT", kind: kindPutBody, apiText: "The disk could not be added to the VM",
		build: cfgCmd(func(c config.DiskConfig) vmm.Command { return vmm.AddDisk{Config: c} })},
	"vm.add-fs": {method: "PUT", kind: kindPutBody, apiText: "The fs could not be added to the VM",
		build: cfgCmd(func(c config.FsConfig) vmm.Command { return vmm.AddFs{Config: c} })},
	"vm.add-pmem": {method: "PUT", kind: kindPutBody, apiText: "The pmem device could not be added to the VM",
		build: cfgCmd(func(c config.PmemConfig) vmm.Command { return vmm.AddPmem{Config: c} })},
	"vm.add-user-device": {method: "PUT", kind: kindPutBody, apiText: "The user device could not be added to the VM",
		build: cfgCmd(func(c config.UserDeviceConfig) vmm.Command { return vmm.AddUserDevice{Config: c} })},
	"vm.add-vdpa": {method: "PUT", kind: kindPutBody, apiText: "The vDPA device could not be added to the VM",
		build: cfgCmd(func(c config.VdpaConfig) vmm.Command { return vmm.AddVdpa{Config: c} })},
	"vm.add-vsock": {method: "PUT", kind: kindPutBody, apiText: "The vsock device could not be added to the VM",
		build: cfgCmd(func(c config.VsockConfig) vmm.Command { return vmm.AddVsock{Config: c} })},
	"vm.add-generic-vhost-user": {method: "PUT", kind: kindPutBody, apiText: "The generic vhost-user device could not be added to the VM",
		build: cfgCmd(func(c config.GenericVhostUserConfig) vmm.Command { return vmm.AddGenericVhostUser{Config: c} })},
	"vm.send-migration": {method: "PUT", kind: kindPutBody, apiText: "Error dispatching the migration worker",
		build: cfgCmd(func(c config.SendMigrationData) vmm.Command { return vmm.SendMigration{Config: c} })},
	"vm.add-net": {method: "PUT", kind: kindPutBody, apiText: "The network device could not be added to the VM",
		build: func(body []byte, fds []*os.File) (vmm.Command, []*os.File, error) {
			var c config.NetConfig
			if err := decodeInto(body, &c); err != nil {
				return nil, nil, err
			}
			clearField(&c, "fds")
			// Every fd received with the request is a tap queue fd (§1.9).
			return vmm.AddNet{Config: c, Fds: fds}, fds, nil
		}},
	"vm.add-device": {method: "PUT", kind: kindPutBody, apiText: "The device could not be added to the VM",
		build: func(body []byte, fds []*os.File) (vmm.Command, []*os.File, error) {
			if len(fds) > 1 {
				return nil, nil, fmt.Errorf("vm.add-device accepts at most one fd, got %d: %w", len(fds), errFdCount)
			}
			var c config.DeviceConfig
			if err := decodeInto(body, &c); err != nil {
				return nil, nil, err
			}
			clearField(&c, "fd")
			return vmm.AddDevice{Config: c, Fds: fds}, fds, nil
		}},
	"vm.restore": {method: "PUT", kind: kindPutBody, apiText: "The VM could not be restored",
		build: func(body []byte, fds []*os.File) (vmm.Command, []*os.File, error) {
			var c config.RestoreConfig
			if err := decodeInto(body, &c, "source_url"); err != nil {
				return nil, nil, err
			}
			clearField(&c, "net_fds", "fds")
			clearField(&c, "vfio_fds", "fd")
			clearField(&c, "iommufd_fd")
			// The fd count is checked against net_fds/vfio_fds by the
			// control loop, which knows RestoreConfig's layout.
			return vmm.Restore{Config: c, Fds: fds}, fds, nil
		}},
	"vm.receive-migration": {method: "PUT", kind: kindPutBody, apiText: "Error receiving migration",
		build: func(body []byte, fds []*os.File) (vmm.Command, []*os.File, error) {
			var c config.ReceiveMigrationData
			if err := decodeInto(body, &c); err != nil {
				return nil, nil, err
			}
			clearField(&c, "vfio_fds", "fd")
			clearField(&c, "iommufd_fd")
			return vmm.ReceiveMigration{Config: c, Fds: fds}, fds, nil
		}},
}
