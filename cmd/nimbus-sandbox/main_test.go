package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// In host mode the shipped file is at its guest path for the command, even
// inside a shell script, and nimbus is on its PATH.
func TestRunExitsWithCommandStatus(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("host mode needs root")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "msg"), []byte("shipped\n"), 0o644)
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--mode", "host", "--file", filepath.Join(dir, "msg") + ":/data/msg",
		"--env", "X=1", "--", "sh", "-c", `cat /data/msg; echo "X=$X"; command -v nimbus; exit 3`}, &out, &errb)
	if code != 3 || out.String() != "shipped\nX=1\n/nimbus/bin/nimbus\n" {
		t.Fatalf("code %d stdout %q stderr %q, wanted 3 and the command's output", code, out.String(), errb.String())
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--file", "nocolon", "--", "true"},
		{"--file", "a:relative", "--", "true"},
		{"--mode", "bogus", "--", "true"},
		{"test"},
		{"image"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, wanted 2 (stderr %q)", args, code, errb.String())
		}
	}
}

func TestMissingQEMUExits125(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--mode", "qemu", "--", "true"}, &out, &errb)
	if code != exitSandboxFailure || !strings.Contains(errb.String(), "qemu-system-x86") {
		t.Fatalf("exit %d stderr %q, wanted 125 naming qemu-system-x86", code, errb.String())
	}
}
