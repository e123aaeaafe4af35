package legacy

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/devices"
	"github.com/nimbus-vmm/nimbus/internal/devices/bus"
)

type exits []devices.ExitReason

func (e *exits) RequestExit(r devices.ExitReason) { *e = append(*e, r) }

func mustInsert(t *testing.T, b *bus.Bus, d bus.Device, base, n uint64) {
	t.Helper()
	if err := b.Insert(d, base, n); err != nil {
		t.Fatal(err)
	}
}

func TestI8042(t *testing.T) {
	var ex exits
	b := bus.NewIO()
	mustInsert(t, b, NewI8042(&ex), I8042Base, I8042Len)
	d := []byte{0}
	b.Read(0x61, d)
	if d[0] != 0x20 {
		t.Errorf("port B = %#x, want 0x20", d[0])
	}
	b.Read(0x64, d)
	if d[0] != 0 {
		t.Errorf("status = %#x, want 0", d[0])
	}
	b.Write(0x64, []byte{0xfd})
	b.Write(0x61, []byte{0xfe})
	b.Write(0x64, []byte{0xfe, 0})
	if len(ex) != 0 {
		t.Fatalf("spurious exits %v", ex)
	}
	b.Write(0x64, []byte{0xfe})
	if len(ex) != 1 || ex[0] != devices.ExitReset {
		t.Errorf("exits = %v, want [reset]", ex)
	}
}

func TestACPIShutdown(t *testing.T) {
	var ex exits
	b := bus.NewIO()
	mustInsert(t, b, NewACPIShutdown(&ex), ACPIShutdownBase, ACPIShutdownLen)
	d := []byte{0xaa, 0xbb}
	b.Read(0x600, d)
	if d[0] != 0 || d[1] != 0 {
		t.Errorf("read = %x, want zeros", d)
	}
	b.Write(0x600, []byte{5 << 2}) // S5 type without SLP_EN: nothing
	b.Write(0x600, []byte{3<<2 | 1<<5})
	if len(ex) != 0 {
		t.Fatalf("spurious exits %v", ex)
	}
	b.Write(0x600, []byte{0x34})
	b.Write(0x600, []byte{1})
	if len(ex) != 2 || ex[0] != devices.ExitPoweroff || ex[1] != devices.ExitReset {
		t.Errorf("exits = %v, want [poweroff reset]", ex)
	}
	b.Write(0x600, nil) // no panic on an empty access
}

func TestPMTimer(t *testing.T) {
	pm := NewPMTimer()
	var fake time.Duration
	pm.now = func() time.Time { return pm.start.Add(fake) }
	read := func() uint32 {
		d := make([]byte, 4)
		pm.Read(PMTimerBase, 0, d)
		return binary.LittleEndian.Uint32(d)
	}
	if got := read(); got != 0 {
		t.Errorf("at start = %d", got)
	}
	fake = time.Second
	if got := read(); got != PMTimerHz {
		t.Errorf("after 1s = %d, want %d", got, PMTimerHz)
	}
	// Past 2^64 ns*Hz (about 85 minutes) the count must still be exact mod 2^32.
	fake = 3 * time.Hour
	if got, want := read(), uint32(uint64(3*3600*PMTimerHz)&0xffffffff); got != want {
		t.Errorf("after 3h = %d, want %d", got, want)
	}
	pm24 := NewPMTimer24()
	pm24.now = func() time.Time { return pm24.start.Add(10 * time.Second) }
	if got := pm24.Count(); got != (10*PMTimerHz)&0xffffff {
		t.Errorf("24-bit = %#x", got)
	}
	d := []byte{0x11, 0x22}
	pm.Read(0, 0, d) // 2-byte read ignored, as upstream
	if d[0] != 0x11 {
		t.Error("short read answered")
	}
}

func TestPMTimerMonotonicRealClock(t *testing.T) {
	pm := NewPMTimer()
	prev := pm.Count()
	for i := 0; i < 1000; i++ {
		c := pm.Count()
		if c < prev {
			t.Fatalf("went backwards: %d then %d", prev, c)
		}
		prev = c
	}
}

func bcd(v int) byte { return byte(v/10<<4 | v%10) }

func TestCMOSTime(t *testing.T) {
	c := NewCMOS(1<<30, 0, nil)
	at := time.Date(2026, time.November, 25, 15, 4, 5, 0, time.UTC) // a Wednesday
	c.now = func() time.Time { return at }
	reg := func(i byte) byte {
		d := []byte{0}
		c.Write(CMOSBase, 0, []byte{i})
		c.Read(CMOSBase, 1, d)
		return d[0]
	}
	want := map[byte]byte{0: bcd(5), 2: bcd(4), 4: bcd(15), 6: bcd(4), 7: bcd(25), 8: bcd(11), 9: bcd(26), 0x32: bcd(20), 0x0a: 0x20, 0x0b: 0x02, 0x0d: 0x80}
	for i, w := range want {
		if got := reg(i); got != w {
			t.Errorf("reg %#x = %#x, want %#x", i, got, w)
		}
	}
	// NMI-mask bit in the index is ignored for data access.
	if got := reg(0x80 | 4); got != bcd(15) {
		t.Errorf("hours via 0x84 = %#x", got)
	}
	// Binary, 12-hour: 15h is 3 PM.
	c.Write(CMOSBase, 0, []byte{0x0b})
	c.Write(CMOSBase, 1, []byte{regBBinary})
	if got := reg(4); got != 0x80|3 {
		t.Errorf("12h binary hours = %#x, want 0x83", got)
	}
	if got := reg(9); got != 26 {
		t.Errorf("binary year = %d", got)
	}
	at = time.Date(2026, 1, 1, 0, 30, 0, 999_900_000, time.UTC)
	if got := reg(4); got != 12 {
		t.Errorf("12h midnight = %#x, want 12", got)
	}
	if got := reg(0x0a); got != 0xa0 {
		t.Errorf("reg A in last 244us = %#x, want UIP set", got)
	}
}

func TestCMOSDecodesHostTime(t *testing.T) {
	c := NewCMOS(0, 0, nil)
	reg := func(i byte) int {
		d := []byte{0}
		c.Write(CMOSBase, 0, []byte{i})
		c.Read(CMOSBase, 1, d)
		return int(d[0]>>4)*10 + int(d[0]&0xf)
	}
	before := time.Now().UTC().Truncate(time.Second)
	got := time.Date(reg(0x32)*100+reg(9), time.Month(reg(8)), reg(7), reg(4), reg(2), reg(0), 0, time.UTC)
	after := time.Now().UTC()
	if got.Before(before.Add(-time.Second)) || got.After(after) {
		t.Errorf("CMOS time %v not within [%v, %v]", got, before, after)
	}
}

func TestCMOSMemoryAndReset(t *testing.T) {
	var ex exits
	c := NewCMOS(3<<30, 5<<30, &ex)
	ext := (3<<30 - 16<<20) / (64 << 10)
	high := (5 << 30) / (64 << 10)
	if c.data[0x34] != byte(ext) || c.data[0x35] != byte(ext>>8) {
		t.Errorf("ext mem = %x %x, want %#x", c.data[0x34], c.data[0x35], ext)
	}
	if c.data[0x5b] != byte(high) || c.data[0x5c] != byte(high>>8) || c.data[0x5d] != byte(high>>16) {
		t.Errorf("high mem = %x, want %#x", c.data[0x5b:0x5e], high)
	}
	small := NewCMOS(8<<20, 0, nil)
	if small.data[0x34] != 0 || small.data[0x35] != 0 {
		t.Error("below 16 MiB should read 0")
	}
	huge := NewCMOS(1<<40, 1<<50, nil)
	if huge.data[0x34] != 0xff || huge.data[0x35] != 0xff || huge.data[0x5d] != 0xff {
		t.Error("sizes not saturated")
	}
	// RAM round trip.
	c.Write(0, 0, []byte{0x40})
	c.Write(0, 1, []byte{0x99})
	d := []byte{0}
	c.Read(0, 1, d)
	if d[0] != 0x99 {
		t.Errorf("RAM readback %#x", d[0])
	}
	c.Write(0, 0, []byte{0x0f}) // without the NMI bit: plain store
	c.Write(0, 1, []byte{0})
	if len(ex) != 0 {
		t.Fatal("reset without 0x8f index")
	}
	c.Write(0, 0, []byte{0x8f})
	c.Write(0, 1, []byte{0})
	if len(ex) != 1 || ex[0] != devices.ExitReset {
		t.Errorf("exits = %v", ex)
	}
}

func TestPostPort(t *testing.T) {
	start := time.Now()
	var logs bytes.Buffer
	p := NewPostPort(start, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	var fake time.Duration
	p.now = func() time.Time { return start.Add(fake) }
	fake = 1500 * time.Millisecond
	p.Write(POSTPort, 0, []byte{0x40})
	fake = 2 * time.Second
	p.Write(POSTPort, 0, []byte{0x41})
	p.Write(POSTPort, 0, []byte{0x40})
	codes := p.Codes()
	if len(codes) != 3 || codes[0] != (PostCode{0x40, 1500 * time.Millisecond}) || codes[1].Code != 0x41 {
		t.Errorf("codes = %v", codes)
	}
	if at, ok := p.First(0x40); !ok || at != 1500*time.Millisecond {
		t.Errorf("First(0x40) = %v %v", at, ok)
	}
	if _, ok := p.First(0x7f); ok {
		t.Error("First found an unwritten code")
	}
	if !strings.Contains(logs.String(), "[Debug I/O port: Kernel code 0x40] 1.500000 seconds") {
		t.Errorf("log = %q", logs.String())
	}
	for i := 0; i < MaxPostCodes; i++ {
		p.Write(POSTPort, 0, []byte{0x90})
	}
	if len(p.Codes()) != MaxPostCodes || p.Dropped() != 3 {
		t.Errorf("kept %d dropped %d", len(p.Codes()), p.Dropped())
	}
	if (PostCode{Code: 0x05}).Range() != "Firmware" || (PostCode{Code: 0x25}).Range() != "Bootloader" || (PostCode{Code: 0x65}).Range() != "Userspace" || (PostCode{Code: 0xff}).Range() != "Custom" {
		t.Error("ranges")
	}
}

func TestDebugConsoleAndFwDebug(t *testing.T) {
	var con, fw bytes.Buffer
	b := bus.NewIO()
	mustInsert(t, b, NewDebugConsole(&con), 0x3f0, DebugConsoleLen) // a configured iobase
	mustInsert(t, b, NewFwDebug(&fw), FwDebugPort, FwDebugLen)
	for _, c := range []byte("hi\n") {
		b.Write(0x3f0, []byte{c})
	}
	b.Write(0x402, []byte{'o'})
	b.Write(0x402, []byte{'k', '!'}) // multi-byte ignored
	if con.String() != "hi\n" || fw.String() != "o" {
		t.Errorf("debugcon %q fwdebug %q", con.String(), fw.String())
	}
	d := []byte{0}
	b.Read(0x402, d)
	if d[0] != 0xe9 {
		t.Errorf("fwdebug read %#x", d[0])
	}
}
