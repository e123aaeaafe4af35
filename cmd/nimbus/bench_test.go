package main

import (
	"bufio"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pingUntilUp polls path until GET vmm.ping answers 200.
func pingUntilUp(b *testing.B, p *proc, path string) {
	b.Helper()
	for i := 0; ; i++ {
		c := httpClient(path)
		resp, err := c.Get("http://localhost/api/v1/vmm.ping")
		c.CloseIdleConnections()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.done:
			b.Fatalf("nimbus exited: %s", p.stderr.String())
		default:
		}
		if i > 100000 {
			b.Fatal("nimbus never answered ping")
		}
		time.Sleep(50 * time.Microsecond)
	}
}

func stop(b *testing.B, p *proc) {
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(); code != 0 {
		b.Fatalf("exit %d", code)
	}
}

// BenchmarkStartToPing: from exec to the API socket answering vmm.ping
// (target ≤ 10 ms; Kata waits up to 10 s).
func BenchmarkStartToPing(b *testing.B) {
	dir := shortDir(b)
	var total time.Duration
	for i := 0; i < b.N; i++ {
		sock := filepath.Join(dir, "s"+strconv.Itoa(i))
		b.StartTimer()
		t0 := time.Now()
		p := startNimbus(b, nil, "--api-socket", sock)
		pingUntilUp(b, p, sock)
		total += time.Since(t0)
		b.StopTimer()
		stop(b, p)
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/start")
}

// BenchmarkIdleRSS: VmRSS of an idle `nimbus --api-socket` after it has
// answered one ping (target ≤ 15 MiB).
func BenchmarkIdleRSS(b *testing.B) {
	dir := shortDir(b)
	var sum float64
	for i := 0; i < b.N; i++ {
		sock := filepath.Join(dir, "r"+strconv.Itoa(i))
		p := startNimbus(b, nil, "--api-socket", sock)
		pingUntilUp(b, p, sock)
		time.Sleep(100 * time.Millisecond) // let start-up settle
		sum += vmRSSMiB(b, p.cmd.Process.Pid)
		stop(b, p)
	}
	b.ReportMetric(sum/float64(b.N), "MiB-RSS")
}

func vmRSSMiB(b *testing.B, pid int) float64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			if err != nil {
				b.Fatal(err)
			}
			return float64(kb) / 1024
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// BenchmarkStartToPingVsBaseline compares this tree's binary with the one
// NIMBUS_BENCH_BASELINE names (e.g. a build of the previous commit). The
// box is shared and noisy, so the two alternate within one run and the
// medians are reported, not means:
//
//	NIMBUS_BENCH_BASELINE=/tmp/nimbus-old go test -run '^$' \
//	    -bench StartToPingVsBaseline -benchtime 40x ./cmd/nimbus
func BenchmarkStartToPingVsBaseline(b *testing.B) {
	base := os.Getenv("NIMBUS_BENCH_BASELINE")
	if base == "" {
		b.Skip("NIMBUS_BENCH_BASELINE not set")
	}
	dir := shortDir(b)
	bins := []string{base, filepath.Join(binDir, "nimbus")}
	times := make([][]time.Duration, len(bins))
	for i := 0; i < b.N; i++ {
		for j, bin := range bins {
			sock := filepath.Join(dir, "b"+strconv.Itoa(i)+"-"+strconv.Itoa(j))
			t0 := time.Now()
			p := startBinary(b, bin, nil, "--api-socket", sock)
			pingUntilUp(b, p, sock)
			times[j] = append(times[j], time.Since(t0))
			stop(b, p)
		}
	}
	b.ReportMetric(medianMs(times[0]), "ms/start-baseline-median")
	b.ReportMetric(medianMs(times[1]), "ms/start-median")
}

// medianMs is the median of ds in milliseconds; ds is sorted in place.
func medianMs(ds []time.Duration) float64 {
	slices.Sort(ds)
	return float64(ds[len(ds)/2].Microseconds()) / 1000
}
