package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/optparse"
	"github.com/nimbus-vmm/nimbus/pkg/client"
)

// request is one REST call, built exactly as ch-remote builds it
// (cloud-hypervisor/src/bin/ch-remote.rs, rest_api_do_command).
type request struct {
	method   string
	endpoint string
	body     []byte // nil: no body
	fds      []int  // sent with SCM_RIGHTS
}

// input is what the command line gave a subcommand.
type input struct {
	arg    string            // the positional argument
	hasArg bool              // whether it was given (or defaulted)
	flags  map[string]string // --name value options
	stdin  io.Reader
}

// command is one subcommand. build turns its input into the request;
// its errors are printed as ch-remote's error chain.
type command struct {
	name     string
	about    string
	arg      string // positional argument placeholder for help; "" = none
	argHelp  string
	required bool   // the positional argument (if any) must be given
	argDef   string // default positional value ("" = none)
	flags    []flagSpec
	build    func(in *input) (*request, error)
	stream   bool // the events stream: not a request/reply
}

type flagSpec struct {
	name     string
	help     string
	required bool // a missing value is a usage error (ch-remote panics)
}

// stepError is one level of the error chain ch-remote prints: msg is the
// level's own text, err the cause printed below it.
type stepError struct {
	msg string
	err error
}

func (e *stepError) Error() string { return e.msg + ": " + e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

func simple(method, endpoint string) func(*input) (*request, error) {
	return func(*input) (*request, error) { return &request{method: method, endpoint: endpoint}, nil }
}

// put renders a PUT whose body is v as JSON.
func put(endpoint string, v any, fds []int) (*request, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, &stepError{"Error encoding the request body", err}
	}
	return &request{method: http.MethodPut, endpoint: endpoint, body: b, fds: fds}, nil
}

// addCommand parses the option syntax with the nimbus CLI's parser, takes
// the fds out of the config (they go over SCM_RIGHTS instead: fd numbers
// mean nothing in another process) and sends the rest as JSON.
func addCommand[T any](endpoint, errMsg string, parse func(string) (*T, error), takeFds func(*T) []int) func(*input) (*request, error) {
	return func(in *input) (*request, error) {
		c, err := parse(in.arg)
		if err != nil {
			return nil, &stepError{errMsg, err}
		}
		var fds []int
		if takeFds != nil {
			fds = takeFds(c)
		}
		return put(endpoint, c, fds)
	}
}

func ints(fds []int32) []int {
	out := make([]int, 0, len(fds))
	for _, fd := range fds {
		out = append(out, int(fd))
	}
	return out
}

func takeNetFds(c *config.NetConfig) []int {
	fds := ints(c.Fds)
	c.Fds = nil
	return fds
}

func takeDeviceFd(c *config.DeviceConfig) []int {
	if c.Fd == nil {
		return nil
	}
	fd := int(*c.Fd)
	c.Fd = nil
	return []int{fd}
}

// takeRestoreFds orders the fds as the server splits them: net fds, then
// VFIO fds, then the iommufd fd.
func takeRestoreFds(c *config.RestoreConfig) []int {
	var fds []int
	for i := range c.NetFds {
		fds = append(fds, ints(c.NetFds[i].Fds)...)
		c.NetFds[i].Fds = nil
	}
	fds = append(fds, takeVfioFds(c.VfioFds)...)
	if c.IommufdFd != nil {
		fds = append(fds, int(*c.IommufdFd))
		c.IommufdFd = nil
	}
	return fds
}

func takeVfioFds(v []config.RestoredVfioConfig) []int {
	var fds []int
	for i := range v {
		if v[i].Fd != nil {
			fds = append(fds, int(*v[i].Fd))
			v[i].Fd = nil
		}
	}
	return fds
}

func takeReceiveFds(c *config.ReceiveMigrationData) []int {
	fds := takeVfioFds(c.VfioFds)
	if c.IommufdFd != nil {
		fds = append(fds, int(*c.IommufdFd))
		c.IommufdFd = nil
	}
	return fds
}

func createBody(in *input) (*request, error) {
	var data []byte
	var err error
	if in.arg == "-" {
		if data, err = io.ReadAll(in.stdin); err != nil {
			return nil, &stepError{"Error reading from stdin", err}
		}
	} else if data, err = os.ReadFile(in.arg); err != nil {
		return nil, &stepError{"Error reading from file", err}
	}
	if data == nil {
		data = []byte{}
	}
	return &request{method: http.MethodPut, endpoint: "vm.create", body: data}, nil
}

func resizeBody(in *input) (*request, error) {
	var r client.ResizeRequest
	if s, ok := in.flags["cpus"]; ok {
		n, err := parseU32(s)
		if err != nil {
			return nil, &stepError{"Error parsing CPU count", err}
		}
		r.DesiredVcpus = &n
	}
	if s, ok := in.flags["memory"]; ok {
		v, err := optparse.ByteSized(s)
		if err != nil {
			return nil, &stepError{"Error parsing memory size", err}
		}
		r.DesiredRAM = &v
	}
	if s, ok := in.flags["balloon"]; ok {
		v, err := optparse.ByteSized(s)
		if err != nil {
			return nil, &stepError{"Error parsing balloon size", err}
		}
		r.DesiredBalloon = &v
	}
	return put("vm.resize", r, nil)
}

// parseU32 parses like Rust's u32::from_str, with its error texts.
func parseU32(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	var ne *strconv.NumError
	switch {
	case err == nil:
		return uint32(n), nil
	case s == "":
		return 0, errors.New("cannot parse integer from empty string")
	case errors.As(err, &ne) && ne.Err == strconv.ErrRange:
		return 0, errors.New("number too large to fit in target type")
	default:
		return 0, errors.New("invalid digit found in string")
	}
}

func resizeDiskBody(in *input) (*request, error) {
	size, err := optparse.ByteSized(in.flags["size"])
	if err != nil {
		return nil, &stepError{"Invalid disk size", err}
	}
	return put("vm.resize-disk", client.ResizeDiskRequest{ID: in.flags["disk"], DesiredSize: size}, nil)
}

func resizeZoneBody(in *input) (*request, error) {
	size, err := optparse.ByteSized(in.flags["size"])
	if err != nil {
		return nil, &stepError{"Error parsing memory size", err}
	}
	return put("vm.resize-zone", client.ResizeZoneRequest{ID: in.flags["id"], DesiredRAM: size}, nil)
}

func jsonBody(endpoint string, mk func(arg string) any) func(*input) (*request, error) {
	return func(in *input) (*request, error) {
		return put(endpoint, mk(in.arg), nil)
	}
}

func sendMigrationBody(in *input) (*request, error) {
	c, err := config.ParseSendMigration(in.arg)
	if err != nil {
		return nil, &stepError{"Error parsing send migration configuration", err}
	}
	return put("vm.send-migration", c, nil)
}

// commands are ch-remote's subcommands in its (alphabetical) help order,
// plus Nimbus's "events".
var commands = []*command{
	{name: "add-device", about: "Add VFIO device", arg: "device_config", required: true,
		argHelp: config.DeviceSyntax,
		build:   addCommand("vm.add-device", "Error parsing device syntax", config.ParseDevice, takeDeviceFd)},
	{name: "add-disk", about: "Add block device", arg: "disk_config", required: true,
		argHelp: config.DiskSyntax,
		build:   addCommand[config.DiskConfig]("vm.add-disk", "Error parsing disk syntax", config.ParseDisk, nil)},
	{name: "add-fs", about: "Add virtio-fs backed fs device", arg: "fs_config", required: true,
		argHelp: config.FsSyntax,
		build:   addCommand[config.FsConfig]("vm.add-fs", "Error parsing filesystem syntax", config.ParseFs, nil)},
	{name: "add-generic-vhost-user", about: "Add generic vhost-user device", arg: "generic_vhost_user_config", required: true,
		argHelp: config.GenericVhostUserSyntax,
		build:   addCommand[config.GenericVhostUserConfig]("vm.add-generic-vhost-user", "Error parsing generic vhost-user syntax", config.ParseGenericVhostUser, nil)},
	{name: "add-net", about: "Add network device", arg: "net_config", required: true,
		argHelp: config.NetSyntax,
		build:   addCommand("vm.add-net", "Error parsing network syntax", config.ParseNet, takeNetFds)},
	{name: "add-pmem", about: "Add persistent memory device", arg: "pmem_config", required: true,
		argHelp: config.PmemSyntax,
		build:   addCommand[config.PmemConfig]("vm.add-pmem", "Error parsing persistent memory syntax", config.ParsePmem, nil)},
	{name: "add-user-device", about: "Add userspace device", arg: "device_config", required: true,
		argHelp: config.UserDeviceSyntax,
		build:   addCommand[config.UserDeviceConfig]("vm.add-user-device", "Error parsing user device syntax", config.ParseUserDevice, nil)},
	{name: "add-vdpa", about: "Add vDPA device", arg: "vdpa_config", required: true,
		argHelp: config.VdpaSyntax,
		build:   addCommand[config.VdpaConfig]("vm.add-vdpa", "Error parsing vDPA device syntax", config.ParseVdpa, nil)},
	{name: "add-vsock", about: "Add vsock device", arg: "vsock_config", required: true,
		argHelp: config.VsockSyntax,
		build:   addCommand[config.VsockConfig]("vm.add-vsock", "Error parsing vsock syntax", config.ParseVsock, nil)},
	{name: "boot", about: "Boot a created VM", build: simple(http.MethodPut, "vm.boot")},
	{name: "coredump", about: "Create a coredump from VM", arg: "coredump_config", argHelp: "<file_path>", required: true,
		build: jsonBody("vm.coredump", func(a string) any { return client.DestinationRequest{DestinationURL: a} })},
	{name: "counters", about: "Counters from the VM", build: simple(http.MethodGet, "vm.counters")},
	{name: "create", about: "Create VM from a JSON configuration", arg: "path", argDef: "-", build: createBody},
	{name: "delete", about: "Delete a VM", build: simple(http.MethodPut, "vm.delete")},
	{name: "events", about: "Follow the VMM's event stream (Nimbus extension: GET /api/v1/vmm.events), one JSON event per line", stream: true},
	{name: "info", about: "Info on the VM", build: simple(http.MethodGet, "vm.info")},
	{name: "nmi", about: "Trigger NMI", build: simple(http.MethodPut, "vm.nmi")},
	{name: "pause", about: "Pause the VM", build: simple(http.MethodPut, "vm.pause")},
	{name: "ping", about: "Ping the VMM to check for API server availability", build: simple(http.MethodGet, "vmm.ping")},
	{name: "power-button", about: "Trigger a power button in the VM", build: simple(http.MethodPut, "vm.power-button")},
	{name: "reboot", about: "Reboot the VM", build: simple(http.MethodPut, "vm.reboot")},
	{name: "receive-migration", about: "Receive a VM migration", arg: "receive_migration_config", required: true,
		argHelp: "receiver_url=<receiver_url>,tls_dir=<dir>,memory_mode=precopy|postcopy,vfio_fds=[<id>@<fd>,...],iommufd_fd=<fd>,zone_updates=[<id>@<host_numa_node>,...]",
		build:   addCommand("vm.receive-migration", "Error parsing receive migration configuration", config.ParseReceiveMigration, takeReceiveFds)},
	{name: "remove-device", about: "Remove VFIO and PCI device", arg: "id", argHelp: "<device_id>", required: true,
		build: jsonBody("vm.remove-device", func(a string) any { return client.RemoveDeviceRequest{ID: a} })},
	{name: "resize", about: "Resize the VM", build: resizeBody, flags: []flagSpec{
		{name: "balloon", help: "New balloon size in bytes (supports K/M/G suffix)"},
		{name: "cpus", help: "New vCPUs count"},
		{name: "memory", help: "New memory size in bytes (supports K/M/G suffix)"},
	}},
	{name: "resize-disk", about: "Resize an attached disk", build: resizeDiskBody, flags: []flagSpec{
		{name: "disk", help: "Disk identifier", required: true},
		{name: "size", help: "New disk size", required: true},
	}},
	{name: "resize-zone", about: "Resize a memory zone", build: resizeZoneBody, flags: []flagSpec{
		{name: "id", help: "Memory zone identifier", required: true},
		{name: "size", help: "New memory zone size in bytes (supports K/M/G suffix)", required: true},
	}},
	{name: "restore", about: "Restore VM from a snapshot", arg: "restore_config", required: true,
		argHelp: "source_url=<source_url>,prefault=on|off,memory_restore_mode=copy|ondemand,net_fds=<list_of_net_ids_with_their_associated_fds>,vfio_fds=<list_of_vfio_ids_with_their_associated_fd>,iommufd_fd=<fd>,resume=true|false,zone_updates=<list_of_zone_ids_with_their_host_numa_node>",
		build:   addCommand("vm.restore", "Error parsing restore syntax", config.ParseRestore, takeRestoreFds)},
	{name: "resume", about: "Resume the VM", build: simple(http.MethodPut, "vm.resume")},
	{name: "send-migration", about: "Initiate a VM migration", arg: "send_migration_config", required: true,
		argHelp: "destination_url=<destination_url>,local=on|off,preserve_source=on|off,downtime_ms=<ms>,timeout_s=<s>,timeout_strategy=cancel|ignore,connections=<n>,tls_dir=<dir>,memory_mode=precopy|postcopy",
		build:   sendMigrationBody},
	{name: "shutdown", about: "Shutdown the VM", build: simple(http.MethodPut, "vm.shutdown")},
	{name: "shutdown-vmm", about: "Shutdown the VMM", build: simple(http.MethodPut, "vmm.shutdown")},
	{name: "snapshot", about: "Create a snapshot from VM", arg: "snapshot_config", argHelp: "<destination_url>", required: true,
		build: jsonBody("vm.snapshot", func(a string) any { return client.DestinationRequest{DestinationURL: a} })},
}

func findCommand(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}
