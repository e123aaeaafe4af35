package api

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

var pingReq = []byte("GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n")

// pingOnce does one keep-alive round trip on c.
func pingOnce(b *testing.B, c net.Conn, br *bufio.Reader) {
	if _, err := c.Write(pingReq); err != nil {
		b.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("status %d", resp.StatusCode)
	}
}

// floorServer is a minimal net/http server on a Unix socket answering
// the same JSON body: the floor Nimbus's API is measured against.
func floorServer(b *testing.B, body []byte) string {
	path := filepath.Join(shortTempDir(b), "floor.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})}
	done := make(chan struct{})
	go func() { srv.Serve(l); close(done) }()
	b.Cleanup(func() { srv.Close(); <-done })
	return path
}

func pingHandler() *fakeHandler {
	resp := &vmm.PingResponse{BuildVersion: "v0.1.0", Version: "0.1.0", Pid: 42, Features: []string{"kvm"}}
	return &fakeHandler{reply: func(vmm.Command) (any, error) { return resp, nil }}
}

// latency measures single-connection round trips and reports p50/p99.
func latency(b *testing.B, path string) {
	c, err := net.Dial("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := 0; i < 200; i++ { // warm up
		pingOnce(b, c, br)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		pingOnce(b, c, br)
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
}

// throughput runs b.N pings spread over n keep-alive clients.
func throughput(b *testing.B, path string, n int) {
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("unix", path)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	b.ResetTimer()
	t0 := time.Now()
	var wg sync.WaitGroup
	for i, c := range conns {
		share := b.N / n
		if i < b.N%n {
			share++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			br := bufio.NewReader(c)
			for j := 0; j < share; j++ {
				pingOnce(b, c, br)
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "req/s")
}

func nimbusPath(b *testing.B) string { return startServer(b, pingHandler(), Options{}).path }

func floorPath(b *testing.B) string {
	return floorServer(b, []byte(`{"build_version":"v0.1.0","version":"0.1.0","pid":42,"features":["kvm"]}`))
}

func BenchmarkPingLatencyNimbus(b *testing.B) { latency(b, nimbusPath(b)) }
func BenchmarkPingLatencyFloor(b *testing.B)  { latency(b, floorPath(b)) }
func BenchmarkPing1ClientNimbus(b *testing.B) { throughput(b, nimbusPath(b), 1) }
func BenchmarkPing1ClientFloor(b *testing.B)  { throughput(b, floorPath(b), 1) }
func BenchmarkPing16ClientsNimbus(b *testing.B) {
	throughput(b, nimbusPath(b), 16)
}
func BenchmarkPing16ClientsFloor(b *testing.B) { throughput(b, floorPath(b), 16) }
