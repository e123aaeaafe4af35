package debimage_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/debimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage"
	"github.com/nimbus-vmm/nimbus/internal/sandbox"
)

// TestInitramfs builds the image's initramfs from the cached Debian kernel
// (skipped before the sandbox fetched one): busybox, /init, ext4 and the
// virtio drivers with what they depend on, each module before its users.
func TestInitramfs(t *testing.T) {
	cache, err := sandbox.DefaultCacheDir()
	if err != nil {
		t.Skip(err)
	}
	if _, err := os.Stat(filepath.Join(cache, "kernel", "current")); err != nil {
		t.Skip("no cached kernel (make kernel fetches it)")
	}
	k, err := sandbox.EnsureKernel(context.Background(), cache)
	if err != nil {
		t.Fatal(err)
	}
	ix, err := guestimage.LoadModuleIndex(k.ModulesDir)
	if err != nil {
		t.Fatal(err)
	}
	bb := os.Getenv(sandbox.EnvBusybox)
	if bb == "" {
		bb = "/bin/busybox"
	}
	if _, err := os.Stat(bb); err != nil {
		t.Skip("no static busybox (busybox-static)")
	}
	data, err := debimage.Initramfs(bb, ix)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := guestimage.ReadArchive(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"/init", "/bin/busybox", "/lib/modules/ext4.ko", "/lib/modules/jbd2.ko", "/lib/modules/virtio_blk.ko", "/lib/modules/virtio_console.ko"} {
		if _, ok := recs[want]; !ok {
			t.Errorf("initramfs lacks %s", want)
		}
	}
	r := recs["/init"]
	b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
	if err != nil {
		t.Fatal(err)
	}
	init := string(b)
	var order []string
	for _, l := range strings.Split(init, "\n") {
		if m, ok := strings.CutPrefix(l, "insmod /lib/modules/"); ok {
			order = append(order, strings.Fields(m)[0])
		}
	}
	jbd2, ext4 := slices.Index(order, "jbd2.ko"), slices.Index(order, "ext4.ko")
	if jbd2 < 0 || ext4 < 0 || jbd2 > ext4 {
		t.Errorf("load order %v: jbd2 must come before ext4", order)
	}
}
