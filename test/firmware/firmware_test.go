package firmware

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/guestimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
	"github.com/nimbus-vmm/nimbus/internal/sandbox"
	"github.com/nimbus-vmm/nimbus/pkg/client"
)

// bootTimeout bounds one firmware boot to power-off (about 20-30 s
// nested); a deadline for progress, not a timing assertion.
const bootTimeout = 3 * time.Minute

// silentLimit ends a boot whose console has printed nothing for this
// long: a whole passing boot, firmware to power-off, takes 47-60 s
// nested, while a nested guest that broke (see the package doc) stays
// silent until bootTimeout, which made every lost try cost three minutes.
var silentLimit = 75 * time.Second

// watchBoot starts cmd and follows its serial file until cmd exits
// (its error), or done says the output is what the caller waited for
// (nil; cmd is killed), or the console has not grown for silentLimit or
// bootTimeout has passed (cmd is killed; the error says which).
func watchBoot(t *testing.T, cmd *exec.Cmd, serial string, done func(out string) bool) error {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func(err error) error {
		cmd.Process.Kill()
		<-exited
		return err
	}
	start, grew, size := time.Now(), time.Now(), -1
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			return err
		case now := <-tick.C:
			b, _ := os.ReadFile(serial)
			if len(b) != size {
				size, grew = len(b), now
			}
			switch {
			case done != nil && done(string(b)):
				return stop(nil)
			case now.Sub(grew) > silentLimit:
				return stop(fmt.Errorf("the guest's console was silent for %v after %d bytes", silentLimit, max(size, 0)))
			case now.Sub(start) > bootTimeout:
				return stop(fmt.Errorf("not done within %v", bootTimeout))
			}
		}
	}
}

// hostTool finds a host program the test runs; without it the test
// skips, or fails where the sandbox promised every tool.
func hostTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		guesttest.Missing(t, "%s missing (Debian package %s; scripts/install-deps.sh installs it)", name, pkg)
	}
	return p
}

// firmwareAssets are Debian's CLOUDHV.fd and the sandbox's EFI system
// partition with GRUB; the test fails without them where the sandbox
// promised them.
func firmwareAssets(t *testing.T) (fw, esp string) {
	t.Helper()
	fw, esp = os.Getenv(sandbox.EnvFirmware), os.Getenv(sandbox.EnvUEFIESP)
	if fw == "" || esp == "" {
		guesttest.Missing(t, "%s=%q, %s=%q: scripts/install-deps.sh fetches CLOUDHV.fd and installs GRUB's EFI build",
			sandbox.EnvFirmware, fw, sandbox.EnvUEFIESP, esp)
	}
	return fw, esp
}

// TestUEFIFirmware: Debian's CLOUDHV.fd given as --kernel (the upstream
// quick start) finds the GPT disk's EFI system partition, starts
// \EFI\BOOT\BOOTX64.EFI (GRUB), GRUB boots the Debian kernel from the ext4
// boot partition, which sees EFI, runs the guest and powers off: exit
// status 0; the PCI functions and BARs GRUB finds are vm.info's. Given as
// --firmware it reaches GRUB the same way, past a power button press, and
// vm.shutdown and vmm.shutdown then behave as upstream's. A QEMU flash
// image is refused at once, saying what boots.
func TestUEFIFirmware(t *testing.T) {
	fw, esp := firmwareAssets(t)
	a := guesttest.Require(t)
	if a.BinDir == "" {
		t.Fatal("no Nimbus binaries: run under nimbus-sandbox test (NIMBUS_BIN_DIR)")
	}
	initramfs := a.ImageFile(t, guestimage.Options{ModuleNames: guestimage.DefaultModules})
	// No quiet: the kernel's efi: lines are checked.
	cmdline := "console=ttyS0 panic=-1 " + guestimage.RunParam(`echo "EFI-RUNTIME=$(ls -d /sys/firmware/efi 2>/dev/null)"`)
	dir, err := os.MkdirTemp("", "nimbus-fw")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	hostTool(t, "mkfs.ext4", "e2fsprogs")
	hostTool(t, "sfdisk", "fdisk")
	disk := filepath.Join(dir, "disk.img")
	if err := sandbox.BuildUEFIDisk(context.Background(), disk, esp, a.Kernel, initramfs, cmdline); err != nil {
		t.Fatal(err)
	}
	nimbus := filepath.Join(a.BinDir, "nimbus")
	// One boot to Linux per run (see the package doc): --kernel, the
	// upstream quick start's option.
	t.Run("kernel", func(t *testing.T) {
		serial, sock := filepath.Join(dir, "kernel.log"), filepath.Join(dir, "api.sock")
		cmd := exec.Command(nimbus, "--api-socket", "path="+sock, "--kernel", fw, "--disk", "path="+disk,
			"--serial", "file="+serial, "--console", "off", "--memory", "size=512M", "-v")
		var run strings.Builder
		cmd.Stdout, cmd.Stderr = &run, &run
		// vm.info while GRUB hands over to Linux: the devices and BARs as
		// the firmware left them, before the kernel may move any.
		var info *client.VmInfo
		var infoErr error
		err := watchBoot(t, cmd, serial, func(out string) bool {
			if info == nil && infoErr == nil && strings.Contains(out, "GRUB: booting Linux") {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				info, infoErr = client.New(sock).Info(ctx)
				cancel()
			}
			return false
		})
		b, _ := os.ReadFile(serial)
		out := string(b)
		if err != nil {
			t.Fatalf("nimbus: %v\n%s\nserial:\n%s", err, run.String(), out)
		}
		for _, want := range []string{
			`BdsDxe: starting Boot`, // the firmware's boot manager took the disk
			"Welcome to GRUB!", "GRUB: booting Linux",
			"efi: EFI v2.70 by Debian distribution of EDK II", // the kernel booted through UEFI
			"EFI-RUNTIME=/sys/firmware/efi", guestimage.MarkerUp,
		} {
			if !strings.Contains(out, want) {
				t.Fatalf("serial output lacks %q:\n%s", want, out)
			}
		}
		if infoErr != nil || info == nil {
			t.Fatalf("vm.info while GRUB ran: %v", infoErr)
		}
		grub, tree := grubPCI(out), infoPCI(t, info)
		if err := samePCI(grub, tree); err != nil {
			t.Errorf("the PCI functions GRUB found after the firmware and vm.info's device tree differ: %v\nserial:\n%s", err, out)
		}
		t.Logf("PCI functions and BAR bases, GRUB and vm.info alike: %v", grub)
	})
	// --firmware takes the same image the same way, up to GRUB. On the
	// way, as under upstream: a power button press that no OS is there to
	// handle changes nothing (the firmware goes on to GRUB), vm.shutdown
	// stops the VM without ending the VMM (state Created), and
	// vmm.shutdown ends it with status 0.
	t.Run("firmware", func(t *testing.T) {
		serial, sock := filepath.Join(dir, "firmware.log"), filepath.Join(dir, "fw-api.sock")
		cmd := exec.Command(nimbus, "--api-socket", "path="+sock, "--firmware", fw, "--disk", "path="+disk,
			"--serial", "file="+serial, "--console", "off", "--memory", "size=512M")
		var run strings.Builder
		cmd.Stdout, cmd.Stderr = &run, &run
		api := client.New(sock)
		stage, apiErr := "power button", error(nil)
		call := func(what string, f func(context.Context) error) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := f(ctx); err != nil && apiErr == nil {
				apiErr = fmt.Errorf("%s: %w", what, err)
			}
		}
		state := func(want string) func(context.Context) error {
			return func(ctx context.Context) error {
				info, err := api.Info(ctx)
				if err == nil && info.State != want {
					err = fmt.Errorf("state %q, want %q", info.State, want)
				}
				return err
			}
		}
		err := watchBoot(t, cmd, serial, func(out string) bool {
			switch {
			case stage == "power button" && strings.Contains(out, "BdsDxe: starting Boot"):
				call("vm.power-button", api.PowerButton)
				stage = "GRUB"
			case stage == "GRUB" && strings.Contains(out, "Welcome to GRUB!"):
				call("vm.info after the press", state(client.StateRunning))
				call("vm.shutdown", api.Shutdown)
				call("vm.info after vm.shutdown", state(client.StateCreated))
				call("vmm.shutdown", api.ShutdownVMM)
				stage = "exit"
			}
			return apiErr != nil // then nimbus is killed
		})
		if err != nil || apiErr != nil || stage != "exit" {
			b, _ := os.ReadFile(serial)
			t.Fatalf("through --firmware to GRUB, at %s: %v, API: %v\nserial:\n%s\nnimbus:\n%s", stage, err, apiErr, b, run.String())
		}
	})
	t.Run("flash image refused", func(t *testing.T) {
		flash := filepath.Join(t.TempDir(), "OVMF.fd")
		img := make([]byte, 2<<20)
		copy(img[40:], "_FVH") // a firmware volume header, as QEMU's flash images start
		os.WriteFile(flash, img, 0o644)
		out, err := exec.Command(filepath.Join(a.BinDir, "nimbus"), "--kernel", flash, "--console", "off", "--serial", "off").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "neither a PVH ELF nor a bzImage") {
			t.Fatalf("a flash image: %v\n%s", err, out)
		}
	})
}
