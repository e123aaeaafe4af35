package vmm_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
	"github.com/nimbus-vmm/nimbus/internal/vmm/vmmtest"
)

func withIncoming(h **harness) func(*vmm.Options) {
	return func(o *vmm.Options) {
		o.Incoming = func(cfg *config.VmConfig, mm json.RawMessage, files []*os.File) (vmm.IncomingMachine, error) {
			return (*h).f.Incoming(cfg, mm, files)
		}
	}
}

// TestMigrationBetweenControllers: the destination's receive blocks until
// the migration is over, the source's send returns at once and refuses
// other requests while it runs; then the source loop stops (StopMigrated)
// with the VM deleted, and the destination runs the VM with the sent RAM.
func TestMigrationBetweenControllers(t *testing.T) {
	src, m := boot(t, false)
	m.RAMBytes = make([]byte, vmmtest.RAMSize)
	copy(m.RAMBytes, "guest memory")
	var dst *harness
	dst = start(t, false, withIncoming(&dst))
	url := "unix:" + filepath.Join(t.TempDir(), "mig.sock")
	recv := make(chan error, 1)
	go func() {
		_, err := dst.do(vmm.ReceiveMigration{Config: config.ReceiveMigrationData{ReceiverURL: url}})
		recv <- err
	}()
	dst.eventsUntil("vm migration-receive-ready")
	src.mustDo(vmm.SendMigration{Config: config.SendMigrationData{DestinationURL: url, DowntimeMs: 300, TimeoutS: 60}})
	select {
	case err := <-recv:
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the migration did not finish")
	}
	if err := src.wait(); err != nil || src.c.Reason() != vmm.StopMigrated {
		t.Fatalf("source loop: %v, reason %v", err, src.c.Reason())
	}
	if got := src.eventsUntil("vmm shutdown"); !slices.Contains(got, "vm migration-finished") || !slices.Contains(got, "vm deleted") {
		t.Fatalf("source events %q", got)
	}
	if calls := m.Calls(); !slices.Contains(calls, "Pause") || !slices.Contains(calls, "SetDiskLocks false") || !slices.Contains(calls, "Shutdown") {
		t.Fatalf("source machine calls %q", calls)
	}
	got := dst.eventsUntil("vm migration-receive-finished")
	if !slices.Contains(got, "vm resumed") {
		t.Fatalf("destination events %q", got)
	}
	if s := info(dst).State; s != vmm.StateRunning {
		t.Fatalf("destination state %s", s)
	}
	if d := dst.f.Last(); string(d.RAMBytes[:12]) != "guest memory" || d.Config().Disks[0].ID != "_disk0" {
		t.Fatalf("destination machine RAM %q config %+v", d.RAMBytes[:12], d.Config())
	}
}

// TestMigrationFailureKeepsTheVM: a destination that is not there fails
// the migration in the worker; the source VM runs on and takes requests
// again.
func TestMigrationFailureKeepsTheVM(t *testing.T) {
	h, m := boot(t, false)
	url := "unix:" + filepath.Join(t.TempDir(), "nobody.sock")
	h.mustDo(vmm.SendMigration{Config: config.SendMigrationData{DestinationURL: url, DowntimeMs: 300, TimeoutS: 60}})
	if got := h.eventsUntil("vm migration-failed"); got[0] != "vm migration-started" {
		t.Fatalf("events %q", got)
	}
	if s := info(h).State; s != vmm.StateRunning {
		t.Fatalf("state after a failed migration %s", s)
	}
	h.mustDo(vmm.PauseVM{})
	if calls := m.Calls(); slices.Contains(calls, "Shutdown") {
		t.Fatalf("machine calls %q", calls)
	}
	for _, c := range []struct {
		d    config.SendMigrationData
		want error
	}{
		{config.SendMigrationData{DestinationURL: "file:///x"}, nil},
		{config.SendMigrationData{DestinationURL: url, Local: true}, vmm.ErrBadConfig},
		{config.SendMigrationData{DestinationURL: "tcp:127.0.0.1:1", Local: true}, vmm.ErrBadConfig},
		{config.SendMigrationData{DestinationURL: url, MemoryMode: config.MigrationPostcopy}, vmm.ErrUnsupported},
	} {
		_, err := h.do(vmm.SendMigration{Config: c.d})
		if err == nil || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("send %+v: %v", c.d, err)
		}
	}
}

// TestReceiveRefusesWhatItCannotBuild: options the destination would not
// honour are refused at once, before it listens.
func TestReceiveRefusesWhatItCannotBuild(t *testing.T) {
	var h *harness
	h = start(t, false, withIncoming(&h))
	url := "unix:" + filepath.Join(t.TempDir(), "mig.sock")
	for _, d := range []config.ReceiveMigrationData{
		{ReceiverURL: url, ZoneUpdates: []config.ZoneUpdate{{ID: "z0", HostNumaNode: 1}}},
		{ReceiverURL: url, TLSDir: "/etc/tls"},
		{ReceiverURL: url, MemoryMode: config.MigrationPostcopy},
	} {
		if _, err := h.do(vmm.ReceiveMigration{Config: d}); !errors.Is(err, vmm.ErrUnsupported) {
			t.Errorf("receive %+v: %v", d, err)
		}
	}
}
