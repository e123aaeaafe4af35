package vmm

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestNoKVMFactory(t *testing.T) {
	old := kvmDevice
	defer func() { kvmDevice = old }()

	kvmDevice = filepath.Join(t.TempDir(), "kvm")
	m, err := NoKVMFactory(nil, nil, nil, nil)
	if m != nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing device: %v %v", m, err)
	}
	if want := "KVM is not available: open " + kvmDevice + ": no such file or directory"; err.Error() != want {
		t.Fatalf("got %q want %q", err, want)
	}

	// A device that opens: the machine is not built yet, never a fake success.
	if err := os.WriteFile(kvmDevice, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	m, err = NoKVMFactory(nil, nil, nil, nil)
	if m != nil || !errors.Is(err, ErrUnsupported) {
		t.Fatalf("present device: %v %v", m, err)
	}
}

func TestValidTransitionTable(t *testing.T) {
	all := []State{StateCreated, StateRunning, StateShutdown, StatePaused, StateBreakPoint}
	allowed := map[State][]State{
		StateCreated:    {StateRunning, StatePaused, StateBreakPoint, StateShutdown},
		StateRunning:    {StatePaused, StateShutdown, StateBreakPoint},
		StateShutdown:   {StateRunning},
		StatePaused:     {StateRunning, StateShutdown},
		StateBreakPoint: {StateCreated, StateRunning},
	}
	for _, from := range all {
		for _, to := range all {
			ok := false
			for _, a := range allowed[from] {
				ok = ok || a == to
			}
			err := validTransition(from, to)
			if ok != (err == nil) {
				t.Errorf("%s -> %s: %v", from, to, err)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalidState) || err.Error() != "invalid VM state transition: "+string(from)+" to "+string(to) {
					t.Errorf("%s -> %s: %q", from, to, err)
				}
			}
		}
	}
}
