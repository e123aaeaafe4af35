package vmm_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// TestCreateAppliesLandlock: vm.create with landlock_enable hands the
// stored config to Options.Confine after the consoles are open; a
// failure is upstream's ApplyLandlock error, and the VM still counts as
// created (as upstream, the config is stored first). Without landlock_enable
// nothing is confined; without a Confine hook it is refused.
func TestCreateAppliesLandlock(t *testing.T) {
	var got []*config.VmConfig
	var confineErr error
	h := start(t, false, func(o *vmm.Options) {
		o.Confine = func(cfg *config.VmConfig) error { got = append(got, cfg); return confineErr }
	})
	h.mustDo(vmm.CreateVM{Config: validConfig(t)})
	h.mustDo(vmm.DeleteVM{})
	if len(got) != 0 {
		t.Fatalf("confined without landlock_enable: %d calls", len(got))
	}

	cfg := validConfig(t)
	cfg.LandlockEnable = true
	cfg.LandlockRules = []config.LandlockConfig{{Path: "/srv/hotplug", Access: "rw"}}
	h.mustDo(vmm.CreateVM{Config: cfg})
	if len(got) != 1 || !got[0].LandlockEnable || got[0].LandlockRules[0].Path != "/srv/hotplug" || got[0].Disks[0].Path != "/a.img" {
		t.Fatalf("Confine got %+v", got)
	}
	h.mustDo(vmm.DeleteVM{})

	confineErr = errors.New("Error opening path")
	_, err := h.do(vmm.CreateVM{Config: cfg})
	if c := chain(err); !slices.Equal(c, []string{"The VM could not be created", "Failed to apply landlock config during vm_create", "Error opening path"}) {
		t.Fatalf("failed Landlock: %q", c)
	}
	if _, err := h.do(vmm.CreateVM{Config: cfg}); !errors.Is(err, vmm.ErrAlreadyCreated) {
		t.Fatalf("after a failed Landlock the VM is not created: %v", err)
	}

	bare := start(t, false)
	_, err = bare.do(vmm.CreateVM{Config: cfg})
	if !errors.Is(err, vmm.ErrUnsupported) || !errors.Is(err, vmm.ErrApplyLandlock) {
		t.Fatalf("landlock_enable without Confine: %v", err)
	}
}
