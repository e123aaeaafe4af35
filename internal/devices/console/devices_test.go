package console

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/config"
)

// TestOpenDevicesMakesWhatTheConfigNames: as upstream's
// pre_create_console_devices, a Pty console's path is written into the
// config, a File serial exists and a Socket serial listens as soon as the
// devices are open; Close removes none of the files but ends the socket.
func TestOpenDevicesMakesWhatTheConfigNames(t *testing.T) {
	dir := t.TempDir()
	cfg := config.DefaultVmConfig()
	cfg.Console = config.ConsoleConfig{Mode: config.ConsolePty}
	cfg.Serial = config.SerialConfig{Mode: config.ConsoleFile, File: filepath.Join(dir, "serial.log")}
	cfg.DebugConsole = config.DebugConsoleConfig{Mode: config.ConsoleOff}
	d, err := OpenDevices(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(cfg.Console.File, "/dev/pts/") || d.Console == nil || d.Console.Path() != cfg.Console.File {
		t.Errorf("console.file = %q, backend %v: want the allocated pty", cfg.Console.File, d.Console)
	}
	if _, err := os.Stat(cfg.Console.File); err != nil {
		t.Errorf("the pty: %v", err)
	}
	if _, err := os.Stat(cfg.Serial.File); err != nil || d.Serial == nil {
		t.Errorf("the serial file was not created: %v", err)
	}
	if d.Debug != nil {
		t.Error("a debug console backend for mode Off")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	sock := filepath.Join(dir, "serial.sock")
	cfg.Console = config.ConsoleConfig{Mode: config.ConsoleNull}
	cfg.Serial = config.SerialConfig{Mode: config.ConsoleSocket, Socket: sock}
	if d, err = OpenDevices(&cfg); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("the serial socket does not listen after OpenDevices: %v", err)
	}
	c.Close()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestOpenDevicesRefusesAndSkips: a Socket console or debug console is
// refused with upstream's text; a File or Socket mode without its path is
// left to the config's validation at boot; a file that cannot be created
// fails with upstream's CreateConsoleDevice text.
func TestOpenDevicesRefusesAndSkips(t *testing.T) {
	cfg := config.DefaultVmConfig()
	cfg.Console = config.ConsoleConfig{Mode: config.ConsoleSocket, Socket: filepath.Join(t.TempDir(), "c.sock")}
	if _, err := OpenDevices(&cfg); !errors.Is(err, ErrNoSocketConsole) || err.Error() != "No socket option support for console device" {
		t.Fatalf("socket console: %v", err)
	}
	cfg.Console = config.ConsoleConfig{Mode: config.ConsoleNull}
	cfg.DebugConsole = config.DebugConsoleConfig{Mode: config.ConsoleSocket}
	if _, err := OpenDevices(&cfg); !errors.Is(err, ErrNoSocketConsole) {
		t.Fatalf("socket debug console: %v", err)
	}
	cfg.DebugConsole = config.DebugConsoleConfig{Mode: config.ConsoleOff}
	cfg.Serial = config.SerialConfig{Mode: config.ConsoleFile}
	d, err := OpenDevices(&cfg)
	if err != nil || d.Serial != nil {
		t.Fatalf("File serial without a path: %v, %v; want it skipped", d, err)
	}
	d.Close()
	cfg.Serial = config.SerialConfig{Mode: config.ConsoleFile, File: "/nonexistent/dir/serial.log"}
	if _, err := OpenDevices(&cfg); !errors.Is(err, ErrCreate) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("uncreatable serial file: %v", err)
	}
}
