package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// In host mode, arguments naming shipped guest paths are rewritten (text
// inside a shell script is not), so the path is passed as an argument.
func TestRunExitsWithCommandStatus(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "msg"), []byte("shipped\n"), 0o644)
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--mode", "host", "--file", filepath.Join(dir, "msg") + ":/data/msg",
		"--env", "X=1", "--", "sh", "-c", `cat "$1"; echo "X=$X"; exit 3`, "sh", "/data/msg"}, &out, &errb)
	if code != 3 || out.String() != "shipped\nX=1\n" {
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
