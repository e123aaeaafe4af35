package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// ErrBadReply classifies a success reply whose body could not be decoded.
var ErrBadReply = errors.New("malformed reply body")

// One method per endpoint of upstream's HTTP_ROUTES (vmm/src/api/http/mod.rs).
// Bodies that are configurations (create, add-*, restore, migration) are
// passed as JSON; the caller builds them (nimbus-remote builds them with
// the same option parsers as the nimbus CLI, as ch-remote does).

func (c *Client) get(ctx context.Context, endpoint string, out any) error {
	resp, err := c.Do(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(resp.Body, out); err != nil {
		return fmt.Errorf("%s: %w: %w", endpoint, ErrBadReply, err)
	}
	return nil
}

func (c *Client) put(ctx context.Context, endpoint string, body []byte, fds ...int) error {
	_, err := c.Do(ctx, http.MethodPut, endpoint, body, fds...)
	return err
}

func (c *Client) putJSON(ctx context.Context, endpoint string, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%s: encoding request: %w", endpoint, err)
	}
	return c.put(ctx, endpoint, body)
}

// add sends a hot/cold add. A booted VM answers 200 with PciDeviceInfo, a
// created-only VM 204 and no body; then add returns (nil, nil).
func (c *Client) add(ctx context.Context, endpoint string, body []byte, fds ...int) (*PciDeviceInfo, error) {
	if body == nil {
		body = []byte{}
	}
	resp, err := c.Do(ctx, http.MethodPut, endpoint, body, fds...)
	if err != nil {
		return nil, err
	}
	if len(resp.Body) == 0 {
		return nil, nil
	}
	var info PciDeviceInfo
	if err := json.Unmarshal(resp.Body, &info); err != nil {
		return nil, fmt.Errorf("%s: %w: %w", endpoint, ErrBadReply, err)
	}
	return &info, nil
}

// Ping is GET vmm.ping.
func (c *Client) Ping(ctx context.Context) (*PingResponse, error) {
	var p PingResponse
	if err := c.get(ctx, "vmm.ping", &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// ShutdownVMM is PUT vmm.shutdown: the VMM deletes the VM and exits.
func (c *Client) ShutdownVMM(ctx context.Context) error { return c.put(ctx, "vmm.shutdown", nil) }

// Info is GET vm.info.
func (c *Client) Info(ctx context.Context) (*VmInfo, error) {
	var info VmInfo
	if err := c.get(ctx, "vm.info", &info); err != nil {
		return nil, err
	}
	return &info, nil
}

// Counters is GET vm.counters. A reply without a body (204) is read as
// no counters.
func (c *Client) Counters(ctx context.Context) (Counters, error) {
	resp, err := c.Do(ctx, http.MethodGet, "vm.counters", nil)
	if err != nil {
		return nil, err
	}
	cs := Counters{}
	if len(resp.Body) == 0 {
		return cs, nil
	}
	if err := json.Unmarshal(resp.Body, &cs); err != nil {
		return nil, fmt.Errorf("vm.counters: %w: %w", ErrBadReply, err)
	}
	return cs, nil
}

// Create is PUT vm.create with a VmConfig JSON body, sent as given.
func (c *Client) Create(ctx context.Context, body []byte) error {
	if body == nil {
		body = []byte{}
	}
	return c.put(ctx, "vm.create", body)
}

// Boot is PUT vm.boot.
func (c *Client) Boot(ctx context.Context) error { return c.put(ctx, "vm.boot", nil) }

// Delete is PUT vm.delete.
func (c *Client) Delete(ctx context.Context) error { return c.put(ctx, "vm.delete", nil) }

// Shutdown is PUT vm.shutdown.
func (c *Client) Shutdown(ctx context.Context) error { return c.put(ctx, "vm.shutdown", nil) }

// Reboot is PUT vm.reboot.
func (c *Client) Reboot(ctx context.Context) error { return c.put(ctx, "vm.reboot", nil) }

// Pause is PUT vm.pause.
func (c *Client) Pause(ctx context.Context) error { return c.put(ctx, "vm.pause", nil) }

// Resume is PUT vm.resume.
func (c *Client) Resume(ctx context.Context) error { return c.put(ctx, "vm.resume", nil) }

// PowerButton is PUT vm.power-button.
func (c *Client) PowerButton(ctx context.Context) error { return c.put(ctx, "vm.power-button", nil) }

// NMI is PUT vm.nmi.
func (c *Client) NMI(ctx context.Context) error { return c.put(ctx, "vm.nmi", nil) }

// Resize is PUT vm.resize.
func (c *Client) Resize(ctx context.Context, r ResizeRequest) error {
	return c.putJSON(ctx, "vm.resize", r)
}

// ResizeDisk is PUT vm.resize-disk.
func (c *Client) ResizeDisk(ctx context.Context, r ResizeDiskRequest) error {
	return c.putJSON(ctx, "vm.resize-disk", r)
}

// ResizeZone is PUT vm.resize-zone.
func (c *Client) ResizeZone(ctx context.Context, r ResizeZoneRequest) error {
	return c.putJSON(ctx, "vm.resize-zone", r)
}

// AddDevice is PUT vm.add-device with a DeviceConfig (VFIO) body and at
// most one fd (the VFIO cdev).
func (c *Client) AddDevice(ctx context.Context, body []byte, fds ...int) (*PciDeviceInfo, error) {
	return c.add(ctx, "vm.add-device", body, fds...)
}

// AddDisk is PUT vm.add-disk with a DiskConfig body.
func (c *Client) AddDisk(ctx context.Context, body []byte) (*PciDeviceInfo, error) {
	return c.add(ctx, "vm.add-disk", body)
}

// AddFs is PUT vm.add-fs with an FsConfig body.
func (c *Client) AddFs(ctx context.Context, body []byte) (*PciDeviceInfo, error) {
	return c.add(ctx, "vm.add-fs", body)
}

// AddGenericVhostUser is PUT vm.add-generic-vhost-user.
func (c *Client) AddGenericVhostUser(ctx context.Context, body []byte) (*PciDeviceInfo, error) {
	return c.add(ctx, "vm.add-generic-vhost-user", body)
}

// AddNet is PUT vm.add-net with a NetConfig body and the tap fds (one per
// queue pair), sent with SCM_RIGHTS.
func (c *Client) AddNet(ctx context.Context, body []byte, fds ...int) (*PciDeviceInfo, error) {
	return c.add(ctx, "vm.add-net", body, fds...)
}

// AddPmem is PUT vm.add-pmem with a PmemConfig body.
func (c *Client) AddPmem(ctx context.Context, body []byte) (*PciDeviceInfo, error) {
	return c.add(ctx, "vm.add-pmem", body)
}

// AddUserDevice is PUT vm.add-user-device with a UserDeviceConfig body.
func (c *Client) AddUserDevice(ctx context.Context, body []byte) (*PciDeviceInfo, error) {
	return c.add(ctx, "vm.add-user-device", body)
}

// AddVdpa is PUT vm.add-vdpa with a VdpaConfig body.
func (c *Client) AddVdpa(ctx context.Context, body []byte) (*PciDeviceInfo, error) {
	return c.add(ctx, "vm.add-vdpa", body)
}

// AddVsock is PUT vm.add-vsock with a VsockConfig body.
func (c *Client) AddVsock(ctx context.Context, body []byte) (*PciDeviceInfo, error) {
	return c.add(ctx, "vm.add-vsock", body)
}

// RemoveDevice is PUT vm.remove-device.
func (c *Client) RemoveDevice(ctx context.Context, id string) error {
	return c.putJSON(ctx, "vm.remove-device", RemoveDeviceRequest{ID: id})
}

// Snapshot is PUT vm.snapshot; destinationURL is file://<existing dir>.
func (c *Client) Snapshot(ctx context.Context, destinationURL string) error {
	return c.putJSON(ctx, "vm.snapshot", DestinationRequest{DestinationURL: destinationURL})
}

// Coredump is PUT vm.coredump; destinationURL is file://<file>.
func (c *Client) Coredump(ctx context.Context, destinationURL string) error {
	return c.putJSON(ctx, "vm.coredump", DestinationRequest{DestinationURL: destinationURL})
}

// Restore is PUT vm.restore with a RestoreConfig body and its fds in
// upstream's order: net fds, then VFIO fds, then the iommufd fd.
func (c *Client) Restore(ctx context.Context, body []byte, fds ...int) error {
	if body == nil {
		body = []byte{}
	}
	return c.put(ctx, "vm.restore", body, fds...)
}

// SendMigration is PUT vm.send-migration with a SendMigrationData body.
func (c *Client) SendMigration(ctx context.Context, body []byte) error {
	if body == nil {
		body = []byte{}
	}
	return c.put(ctx, "vm.send-migration", body)
}

// ReceiveMigration is PUT vm.receive-migration with a ReceiveMigrationData
// body and its fds (VFIO fds, then the iommufd fd). It returns only when
// the whole migration has completed.
func (c *Client) ReceiveMigration(ctx context.Context, body []byte, fds ...int) error {
	if body == nil {
		body = []byte{}
	}
	return c.put(ctx, "vm.receive-migration", body, fds...)
}
