package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/api"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
	"github.com/nimbus-vmm/nimbus/internal/vmm/vmmtest"
)

// startNimbus runs Nimbus's real API server and control loop in process,
// with the control loop's test-double machine instead of KVM, and returns
// the socket path. Everything stops at test cleanup.
func startNimbus(tb testing.TB) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "nimbus.sock")
	ctrl := vmm.New(vmm.Options{
		Factory:      (&vmmtest.Factory{}).New,
		Version:      "54.0.0",
		BuildVersion: "v-client-test",
		Signals:      make(chan os.Signal),
	})
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { defer close(runDone); ctrl.Run(ctx) }()
	ln, err := api.Listen(path)
	if err != nil {
		cancel()
		<-runDone
		tb.Fatal(err)
	}
	srv := api.New(ctrl, api.Options{})
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(ln) }()
	tb.Cleanup(func() {
		srv.Close()
		<-served
		ln.Close()
		cancel()
		<-runDone
	})
	return path
}

// The typed methods against the real server, through a VM's life.
func TestAgainstNimbus(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := New(startNimbus(t))

	p, err := c.Ping(ctx)
	if err != nil || p.Version != "54.0.0" || p.Pid != int64(os.Getpid()) {
		t.Fatalf("Ping = %+v, %v", p, err)
	}
	var ae *APIError
	if _, err := c.Info(ctx); !errors.As(err, &ae) || ae.StatusCode != 404 || ae.Status() != "NotFound" ||
		len(ae.Messages) == 0 || ae.Messages[0] != "Error from API" {
		t.Fatalf("Info before create: %v", err)
	}
	if err := c.Create(ctx, []byte(`{"cpus":{"boot_vcpus":2,"max_vcpus":2},"payload":{"kernel":"/k"}}`)); err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil || info.State != StateCreated {
		t.Fatalf("Info = %+v, %v", info, err)
	}
	var cfg struct {
		Cpus struct {
			BootVcpus int `json:"boot_vcpus"`
		} `json:"cpus"`
	}
	if err := json.Unmarshal(info.Config, &cfg); err != nil || cfg.Cpus.BootVcpus != 2 {
		t.Errorf("config %s (%v)", info.Config, err)
	}

	// Cold add: 204, so no PciDeviceInfo.
	dev, err := c.AddDisk(ctx, []byte(`{"path":"/tmp/d.img","id":"d0"}`))
	if err != nil || dev != nil {
		t.Fatalf("cold AddDisk = %+v, %v", dev, err)
	}
	if err := c.RemoveDevice(ctx, "nope"); !errors.As(err, &ae) || ae.StatusCode != 404 {
		t.Errorf("RemoveDevice(nope) = %v", err)
	}
	if err := c.RemoveDevice(ctx, "d0"); err != nil {
		t.Errorf("RemoveDevice(d0) = %v", err)
	}
	if err := c.Resize(ctx, ResizeRequest{}); err != nil {
		t.Errorf("Resize(nulls) = %v", err)
	}

	if err := c.Boot(ctx); err != nil {
		t.Fatal(err)
	}
	if info, err = c.Info(ctx); err != nil || info.State != StateRunning {
		t.Fatalf("Info after boot = %+v, %v", info, err)
	}
	if err := c.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Pause(ctx); !errors.As(err, &ae) || ae.StatusCode != 500 {
		t.Errorf("second Pause = %v, want a 500", err)
	}
	if err := c.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Counters(ctx); err != nil {
		t.Errorf("Counters = %v", err)
	}
	for _, f := range []func(context.Context) error{c.Delete, c.Delete} {
		if err := f(ctx); err != nil {
			t.Fatalf("Delete = %v", err)
		}
	}
	if err := c.ShutdownVMM(ctx); err != nil {
		t.Fatal(err)
	}
}

// Several vm.add-net requests with tap fds on ONE connection, as Kata and
// libvirt send them, against the real server's fd collection.
func TestConnKeepAliveAddNetWithFds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := New(startNimbus(t))
	if err := c.Create(ctx, []byte(`{"cpus":{"boot_vcpus":2,"max_vcpus":2},"payload":{"kernel":"/k"}}`)); err != nil {
		t.Fatal(err)
	}
	conn, err := c.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, id := range []string{"net0", "net1", "net2"} {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		body := `{"id":"` + id + `","mac":"12:34:56:78:90:0` + id[3:] + `","num_queues":2}`
		resp, err := conn.Do(ctx, http.MethodPut, "vm.add-net", []byte(body), int(w.Fd()))
		r.Close()
		w.Close()
		if err != nil || resp.StatusCode != 204 {
			t.Fatalf("add-net %s: %+v, %v", id, resp, err)
		}
	}
	// The same connection still serves other requests.
	resp, err := conn.Do(ctx, http.MethodGet, "vm.info", nil)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Config struct {
			Net []struct {
				ID string `json:"id"`
			} `json:"net"`
		} `json:"config"`
	}
	if err := json.Unmarshal(resp.Body, &info); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, n := range info.Config.Net {
		ids = append(ids, n.ID)
	}
	sort.Strings(ids)
	if strings.Join(ids, ",") != "net0,net1,net2" {
		t.Errorf("nets after three add-net on one connection: %v (%s)", ids, resp.Body)
	}
}

// BenchmarkPing measures a vmm.ping round trip against the real server:
// one connection per call (Client.Do, as ch-remote) and one keep-alive
// connection (Conn.Do, as Kata).
func BenchmarkPing(b *testing.B) {
	c := New(startNimbus(b))
	ctx := context.Background()
	b.Run("new-connection", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := c.Ping(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("keep-alive", func(b *testing.B) {
		conn, err := c.Dial(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		for i := 0; i < b.N; i++ {
			if _, err := conn.Do(ctx, http.MethodGet, "vmm.ping", nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
