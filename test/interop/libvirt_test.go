package interop

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/test/internal/libvirtsim"
)

// TestLibvirtAddNet: each reply must arrive whole in libvirt's single
// recv, with status 200 or 204, for several NICs on one connection.
func TestLibvirtAddNet(t *testing.T) {
	n := startNimbus(t, nil)
	cl := kataClient(t, n.sock)
	cfg := kataVMConfig("/run/libvirt/ch")
	cfg.Cpus.BootVcpus = 2 // two queue pairs need two vCPUs (upstream's check)
	if _, err := cl.CreateVM(t.Context()).VmConfig(cfg).Execute(); err != nil {
		t.Fatalf("vm.create: %v", openAPIClientError(err))
	}

	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: n.sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	for i, nfds := range []int{1, 2} {
		var fds []int
		for _, f := range pipes(t, nfds) {
			fds = append(fds, int(f.Fd()))
		}
		body := fmt.Sprintf(`{"mac":"52:54:00:00:00:0%d","num_queues":%d}`, i, 2*nfds)
		if got, err := libvirtsim.AddNet(conn, body, fds); err != nil {
			t.Fatalf("NIC %d: %v (got %q)", i, err, got)
		}
	}
	t.Logf("two libvirt add-net exchanges took %v", time.Since(start))

	ctx := t.Context()
	info, _, err := cl.VmInfoGet(ctx).Execute()
	if err != nil || info.Config.Net == nil || len(*info.Config.Net) != 2 {
		t.Fatalf("vm.info after libvirt's add-net: %+v %v", info.Config.Net, err)
	}
	if q := (*info.Config.Net)[1].GetNumQueues(); q != 4 {
		t.Errorf("second NIC num_queues %d", q)
	}
}
