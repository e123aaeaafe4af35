package distro

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/debimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
	"github.com/nimbus-vmm/nimbus/internal/testnet"
	"github.com/nimbus-vmm/nimbus/internal/testproc"
)

// The NoCloud seed of TestDebianCloudInit, as users write one for a cloud
// image: a user with a password hash (`openssl passwd -6 -salt nimbussalt
// cloudpw`), a host name, a runcmd that writes a marker to the serial
// console, and a static address on the NIC (matched by its MAC).
const (
	cloudHost     = "nimbus-cloud"
	cloudUser     = "nimbus"
	cloudPassword = "cloudpw"
	cloudMAC      = "52:54:00:4e:49:4d"
	cloudHostAddr = "192.168.249.1" // the tap's, in the test's namespace
	cloudAddr     = "192.168.249.2" // the guest's, from network-config
	cloudMarker   = "NIMBUS-CLOUD-INIT-RUNCMD"

	cloudUserData = `#cloud-config
hostname: ` + cloudHost + `
users:
  - name: ` + cloudUser + `
    passwd: "$6$nimbussalt$1QKpL7y7scU.dy.NS4QGPvz00XGOSUIUGdoABii6iXcklRl7X8qFAu.aoC2UZW9OfzT5bvoJ3n1UdTp/gmitj/"
    lock_passwd: false
    shell: /bin/bash
runcmd:
  - echo "` + cloudMarker + ` $(hostname)" > /dev/ttyS0
`
	cloudNetworkConfig = `version: 2
ethernets:
  eth0:
    match:
      macaddress: "` + cloudMAC + `"
    addresses: [` + cloudAddr + `/24]
`
)

// TestDebianCloudInit boots the image (raw, the kernel given directly;
// through CLOUDHV.fd see TestDebianUEFI) with a second disk holding a
// NoCloud seed made by cloud-localds, and a NIC on a tap that nimbus
// creates in a network namespace the test made. cloud-init applies the
// seed: the runcmd's marker on the serial console, the host name, the
// user logged in with the hashed password, `cloud-init status` done, the
// static address on eth0, and a ping from the namespace answered by the
// guest. Then root powers the machine off: nimbus exits 0.
func TestDebianCloudInit(t *testing.T) {
	img := image(t)
	a := guesttest.Require(t)
	dir := t.TempDir()
	raw := filepath.Join(dir, "debian.raw")
	testproc.Tool(t, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", filepath.Join(img, debimage.QCOW2File), raw)
	files := map[string]string{
		"user-data":      cloudUserData,
		"meta-data":      "instance-id: nimbus-" + filepath.Base(dir) + "\nlocal-hostname: " + cloudHost + "\n",
		"network-config": cloudNetworkConfig,
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	seed := filepath.Join(dir, "seed.img")
	testproc.Tool(t, "cloud-localds", "-N", filepath.Join(dir, "network-config"), seed,
		filepath.Join(dir, "user-data"), filepath.Join(dir, "meta-data"))

	ns := testnet.NewNetns(t)
	// net.ifnames=0: the NIC is eth0, as the network-config names it.
	d := bootDebianVia(t, a, testnet.StartIn(ns), "ttyS0", append(directBoot(img, "ttyS0", "net.ifnames=0"),
		"--disk", "path="+raw, "path="+seed+",readonly=on",
		"--net", "tap=cloud0,ip="+cloudHostAddr+",mask=255.255.255.0,mac="+cloudMAC)...)
	d.host = cloudHost
	// cloud-init's four stages (Python, nested) come before the marker:
	// 217 s after start in the first boot that got there.
	ctx, cancel := context.WithTimeout(context.Background(), 2*bootTimeout)
	if _, err := d.term.ExpectQuiet(ctx, cloudMarker+" "+cloudHost, bootSilence); err != nil {
		cancel()
		d.fail("cloud-init's runcmd: %v", err)
	}
	cancel()
	d.t.Logf("runcmd's marker %.1fs after start", time.Since(d.t0).Seconds())
	// The login prompt may have come before the marker: ask for a new one.
	if err := d.term.Type(""); err != nil {
		d.fail("%v", err)
	}
	d.loginAs(cloudUser, cloudPassword)
	d.expectOutput(`echo "U-$(id -un) $(hostname)"`, "U-"+cloudUser+" "+cloudHost)
	if out := d.run("cloud-init status --wait"); !strings.Contains(out, "status: done") {
		d.fail("cloud-init status: %q", out)
	}
	d.expectOutput(`ip -4 -o addr show dev eth0 | awk '{print "A-" $4}'`, "A-"+cloudAddr+"/24")
	var ping []byte
	err := testnet.InNetns(ns, func() error {
		var err error
		ping, err = exec.Command("ping", "-c", "3", "-W", "10", cloudAddr).CombinedOutput()
		return err
	})
	if err != nil {
		d.fail("ping %s from the test's namespace: %v\n%s", cloudAddr, err, ping)
	}
	t.Logf("ping from the namespace:\n%s", ping)
	if err := d.term.Type("exit"); err != nil {
		d.fail("%v", err)
	}
	d.login()
	d.checkMultiUser("/dev/vda")
	d.poweroff()
}
