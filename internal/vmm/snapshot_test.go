package vmm_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/devices/console"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

func withRestorer(h **harness) func(*vmm.Options) {
	return func(o *vmm.Options) {
		o.Restorer = func(cfg *config.VmConfig, cons *console.Devices, src vmm.RestoreSource, exits chan<- vmm.MachineExit) (vmm.Machine, error) {
			return (*h).f.Restore(cfg, cons, src, exits)
		}
	}
}

// TestSnapshotRefusedWritesNothing: a machine that cannot be saved (a
// device without snapshot support) is refused before config.json is
// written, so the directory can take the next snapshot.
func TestSnapshotRefusedWritesNothing(t *testing.T) {
	h, m := boot(t, false)
	dir := t.TempDir()
	h.mustDo(vmm.PauseVM{})
	m.CheckSnapshotErr = fmt.Errorf("snapshot _vsock0: %w", vmm.ErrUnsupported)
	_, err := h.do(vmm.Snapshot{DestinationURL: "file://" + dir})
	if got := chain(err); !slices.Equal(got, []string{"The VM could not be snapshotted", "Cannot snapshot VM", "snapshot _vsock0", "not supported"}) {
		t.Fatalf("refused snapshot: %q", got)
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Fatalf("the refused snapshot left %v (%v)", ents, err)
	}
	m.CheckSnapshotErr = nil
	h.mustDo(vmm.Snapshot{DestinationURL: "file://" + dir})
}

// TestSnapshotThenRestore: a paused VM's snapshot writes config.json (the
// filled-in config) before the machine writes its part; a second VMM
// restores from it, Paused, with upstream's events, and resume runs it.
func TestSnapshotThenRestore(t *testing.T) {
	h, m := boot(t, false)
	dir := t.TempDir()
	h.mustDo(vmm.PauseVM{})
	h.mustDo(vmm.Snapshot{DestinationURL: "file://" + dir})
	h.eventsUntil("vm snapshotted")
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var saved config.VmConfig
	if err := json.Unmarshal(b, &saved); err != nil || saved.Disks[0].ID != "_disk0" || saved.Net[0].MAC == "" {
		t.Fatalf("config.json %s: %v", b, err)
	}
	if calls := m.Calls(); calls[len(calls)-1] != "Snapshot "+dir {
		t.Fatalf("machine calls %q", calls)
	}
	// config.json is created exclusively, as upstream.
	_, err = h.do(vmm.Snapshot{DestinationURL: "file://" + dir})
	if got := chain(err); len(got) < 4 || !slices.Equal(got[:4], []string{"The VM could not be snapshotted",
		"Cannot send VM snapshot", "Failed to send migratable component snapshot", "Error creating VM config snapshot file"}) {
		t.Fatalf("second snapshot: %q", got)
	}
	_, err = h.do(vmm.Snapshot{DestinationURL: "file://" + dir + "/none"})
	if got, want := chain(err), []string{"The VM could not be snapshotted", "Cannot send VM snapshot",
		"Failed to send migratable component snapshot", "Destination is not a directory: \"" + dir + "/none\""}; !slices.Equal(got, want) {
		t.Fatalf("snapshot into a missing directory:\n got %q\nwant %q", got, want)
	}

	var r *harness
	r = start(t, false, withRestorer(&r))
	r.mustDo(vmm.Restore{Config: config.RestoreConfig{SourceURL: "file://" + dir}})
	if got := r.eventsUntil("vm restored"); !slices.Equal(got, []string{"vm restoring", "vm restored"}) {
		t.Fatalf("events %q", got)
	}
	i := info(r)
	if i.State != vmm.StatePaused || i.Config.Disks[0].ID != "_disk0" {
		t.Fatalf("restored VM: state %s, config %+v", i.State, i.Config)
	}
	rm := r.f.Last()
	if rm.Restored == nil || rm.Restored.Dir != dir {
		t.Fatalf("restore source %+v", rm.Restored)
	}
	r.expectErr(vmm.Restore{Config: config.RestoreConfig{SourceURL: "file://" + dir}}, vmm.ErrAlreadyCreated,
		"The VM could not be restored", "VM is already created")
	r.mustDo(vmm.ResumeVM{})
	if s := info(r).State; s != vmm.StateRunning {
		t.Fatalf("state after resume %s", s)
	}
}

// TestRestoreFailures: a restore that fails leaves no VM behind, and its
// fds are closed; the NIC that had tap fds must get new ones.
func TestRestoreFailures(t *testing.T) {
	dir := t.TempDir()
	cfg := validConfig(t)
	cfg.Net[0].ID, cfg.Net[0].Fds = "net0", []int32{7}
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	var h *harness
	h = start(t, false, withRestorer(&h))
	h.expectErr(vmm.Restore{Config: config.RestoreConfig{SourceURL: "file://" + dir}}, config.ErrInvalid,
		"The VM could not be restored", "Failed to validate config", "Net id net0 is associated with FDs and is required")
	zu := config.RestoreConfig{SourceURL: "file://" + dir, NetFds: []config.RestoredNetConfig{{ID: "net0", NumFds: 1}},
		ZoneUpdates: []config.ZoneUpdate{{ID: "z0", HostNumaNode: 1}}}
	w0, r0 := pipeFd(t)
	if _, err := h.do(vmm.Restore{Config: zu, Fds: []*os.File{w0}}); !errors.Is(err, vmm.ErrUnsupported) {
		t.Errorf("restore with zone_updates: %v", err)
	}
	assertClosed(t, r0, "the net fd of a restore refused for zone_updates")
	h.expectErr(vmm.Restore{Config: config.RestoreConfig{SourceURL: "file://" + dir, Prefault: true,
		MemoryRestoreMode: config.MemoryRestoreOnDemand}}, config.ErrInvalid,
		"The VM could not be restored", "Failed to validate config", "'prefault' cannot be combined with 'memory_restore_mode=ondemand'")

	w, r := pipeFd(t)
	rc := config.RestoreConfig{SourceURL: "file://" + dir, NetFds: []config.RestoredNetConfig{{ID: "net0", NumFds: 1}}}
	h.f.Err = errors.New("no KVM here")
	if _, err := h.do(vmm.Restore{Config: rc, Fds: []*os.File{w}}); err == nil {
		t.Fatal("restore with a failing machine succeeded")
	}
	assertClosed(t, r, "the net fd of a failed restore")
	h.expectErr(vmm.Info{}, vmm.ErrNotCreated, "The VM info is not available", "VM is not created")

	h.f.Err = nil
	w, _ = pipeFd(t)
	h.mustDo(vmm.Restore{Config: rc, Fds: []*os.File{w}})
	if got := h.f.Last().Config().Net[0].Fds; len(got) != 1 || got[0] != int32(w.Fd()) {
		t.Fatalf("restored NIC fds %v, want [%s]", got, strconv.Itoa(int(w.Fd())))
	}
}
