package sandbox

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// QEMUFiles lists what running the host's dynamically linked QEMU inside
// the sandbox guest needs: the binary, the shared libraries ldd reports
// (at the same paths, so the guest's ld.so finds them) and the firmware
// directories. It returns the guest path of the binary, for EnvQEMU.
func QEMUFiles(qemu string) ([]File, string, error) {
	if qemu == "" {
		qemu = "qemu-system-x86_64"
	}
	bin, err := exec.LookPath(qemu)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %s not found: install Debian package qemu-system-x86: %w", ErrMissingTool, qemu, err)
	}
	const guestBin = "/usr/bin/qemu-system-x86_64"
	files, err := binaryFiles(bin, guestBin)
	if err != nil {
		return nil, "", err
	}
	for _, d := range []string{"/usr/share/qemu", "/usr/share/seabios"} {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			files = append(files, File{Host: d, Guest: d})
		}
	}
	return files, guestBin, nil
}

// binaryFiles is a dynamically linked program at guest path guest and the
// shared libraries ldd reports, at their host paths; for a script, the
// script and its interpreter (with the interpreter's libraries).
func binaryFiles(bin, guest string) ([]File, error) {
	if interp, ok := scriptInterpreter(bin); ok {
		files, err := binaryFiles(interp, interp)
		return append(files, File{Host: bin, Guest: guest}), err
	}
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("%w: ldd %s: %w", ErrMissingTool, bin, err)
	}
	files := []File{{Host: bin, Guest: guest}}
	libs, err := parseLdd(out)
	if err != nil {
		return nil, err
	}
	for _, l := range libs {
		files = append(files, File{Host: l, Guest: l})
	}
	return files, nil
}

// TestTools are host programs the end-to-end tests run inside the
// sandbox (tests that need one say so when it is missing): e2fsprogs for
// virtio-pmem's and the firmware tests' ext4 images, qemu-utils'
// qemu-storage-daemon for vhost-user-blk, sfdisk for the firmware tests'
// GPT disks, DPDK's testpmd (dpdk-dev) as the vhost-user-net back end,
// cloud-localds (cloud-image-utils, a bash script) and the genisoimage it
// runs for the distribution tests' cloud-init seed.
// (virtiofsd comes from EnsureVirtiofsd, the EFI system partition from
// BuildESP.)
var TestTools = []string{"mkfs.ext4", "debugfs", "qemu-storage-daemon", "qemu-img", "sfdisk", "dpdk-testpmd",
	"cloud-localds", "genisoimage"}

// TestLibraries are host libraries the test tools load at run time (no
// ldd shows them): DPDK's vhost-user and mempool drivers for the
// vhost-user-net test's dpdk-testpmd.
var TestLibraries = []string{
	"/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0/librte_net_vhost.so.23",
	"/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0/librte_mempool_ring.so.23",
}

// HostToolFiles ships each of tools the host has (a name on PATH or an
// absolute path) with its libraries, at the same path in the guest; the
// ones it lacks are skipped.
func HostToolFiles(tools ...string) ([]File, error) {
	var files []File
	for _, t := range tools {
		bin, err := exec.LookPath(t)
		if err != nil {
			if _, serr := os.Stat(t); !filepath.IsAbs(t) || serr != nil {
				continue
			}
			bin = t // a library: shipped with what it links
		}
		f, err := binaryFiles(bin, bin)
		if err != nil {
			return nil, err
		}
		files = append(files, f...)
	}
	return files, nil
}

// addQEMU makes a QEMU available to the command as $NIMBUS_QEMU: the
// host's on the host, shipped with its libraries into the QEMU sandbox.
func addQEMU(mode Mode, files []File, env []string) ([]File, []string, error) {
	if mode == Host {
		q, err := exec.LookPath("qemu-system-x86_64")
		if err != nil {
			return nil, nil, fmt.Errorf("%w: qemu-system-x86_64: %w", ErrMissingTool, err)
		}
		return files, append(env, EnvQEMU+"="+q), nil
	}
	qf, guest, err := QEMUFiles("")
	if err != nil {
		return nil, nil, err
	}
	return append(files, qf...), append(env, EnvQEMU+"="+guest), nil
}

// parseLdd returns the absolute library paths in ldd output.
func parseLdd(out []byte) ([]string, error) {
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 3 && f[1] == "=>" && filepath.IsAbs(f[2]):
			libs = append(libs, f[2])
		case len(f) >= 1 && filepath.IsAbs(f[0]): // the dynamic loader
			libs = append(libs, f[0])
		case len(f) >= 2 && f[1] == "=>" && (len(f) < 3 || f[2] == "not"):
			return nil, fmt.Errorf("%w: shared library %s not found", ErrMissingTool, f[0])
		}
	}
	return libs, nil
}

// scriptInterpreter is the program a "#!" line at the start of path names.
func scriptInterpreter(path string) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadString('\n')
	rest, ok := strings.CutPrefix(line, "#!")
	if f := strings.Fields(rest); ok && len(f) > 0 && filepath.IsAbs(f[0]) {
		return f[0], true
	}
	return "", false
}
