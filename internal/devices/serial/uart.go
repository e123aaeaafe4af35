// Package serial emulates the 8250/16550A UART that Cloud Hypervisor puts
// at COM1 (I/O 0x3f8, IRQ 4).
//
// The register model follows upstream devices/src/legacy/serial.rs: DLAB
// divisor latch, IER, IIR (FIFO bits always reported), LCR, MCR with
// loopback, LSR, MSR, SCR, and THR/RBR with an input FIFO. Transmission is
// instantaneous, so THR is always empty and a THRE interrupt is raised
// after each byte when IER enables it.
//
// One deliberate addition: writing IER re-raises interrupts whose condition
// is already pending (received data waiting, THR empty), as a level-driven
// real UART would. Linux's 8250 console code masks IER around every printk
// and relies on this; without it, input typed during console output can sit
// unnoticed (rust-vmm/vm-superio PR #135 fixed the same bug).
package serial

import (
	"io"
	"sync"

	"github.com/nimbus-vmm/nimbus/internal/devices"
)

// COM1 placement, as upstream's device_manager registers it.
const (
	COM1Base = 0x3f8
	COM1Len  = 8
	COM1IRQ  = 4
)

// Register offsets from the base port.
const (
	regData = 0 // RBR (read) / THR (write); DLL when DLAB is set
	regIER  = 1 // DLM when DLAB is set
	regIIR  = 2
	regLCR  = 3
	regMCR  = 4
	regLSR  = 5
	regMSR  = 6
	regSCR  = 7
)

// Register bits and reset values (upstream serial.rs).
const (
	ierRecv     = 0x01
	ierTHR      = 0x02
	ierFIFOBits = 0x0f

	iirFIFOBits = 0xc0
	iirNone     = 0x01
	iirTHR      = 0x02
	iirRecv     = 0x04

	lcrDLAB = 0x80

	lsrData  = 0x01
	lsrEmpty = 0x20
	lsrIdle  = 0x40

	mcrLoop = 0x10

	defaultIIR     = iirNone
	defaultLSR     = lsrEmpty | lsrIdle
	defaultLCR     = 0x03 // 8 data bits
	defaultMCR     = 0x08 // OUT2
	defaultMSR     = 0x20 | 0x10 | 0x80
	defaultDivisor = 12 // 9600 baud

	loopSize = 0x40 // loopback FIFO depth, as upstream's LOOP_SIZE
)

// InputCapacity is how many received bytes the UART buffers for the guest.
// Enqueue accepts no more; the caller waits on Writable (backpressure).
const InputCapacity = 4096

// UART is one 16550A. Its methods are safe for concurrent use: vCPU
// threads call Read and Write, a console backend calls Enqueue.
type UART struct {
	mu  sync.Mutex
	irq devices.IRQ
	out io.Writer

	ier, iir, lcr, mcr, lsr, msr, scr uint8
	divisor                           uint16

	in      [InputCapacity]byte // ring buffer of received bytes
	inHead  int
	inLen   int
	txByte  [1]byte       // reused so a THR write does not allocate
	space   chan struct{} // signalled when the guest frees input space
	paused  bool          // Pause: host input waits, no interrupts from it
	irqErrs uint64
	outErrs uint64
}

// New returns a UART in its reset state. irq is pulsed for THRE and
// received-data interrupts; out receives the guest's output one byte per
// Write and must not block (console backends buffer). out may be nil to
// discard output.
func New(irq devices.IRQ, out io.Writer) *UART {
	if out == nil {
		out = io.Discard
	}
	return &UART{
		irq:     irq,
		out:     out,
		iir:     defaultIIR,
		lcr:     defaultLCR,
		lsr:     defaultLSR,
		mcr:     defaultMCR,
		msr:     defaultMSR,
		divisor: defaultDivisor,
		space:   make(chan struct{}, 1),
	}
}

// SetOutput replaces the output writer (nil discards).
func (u *UART) SetOutput(out io.Writer) {
	if out == nil {
		out = io.Discard
	}
	u.mu.Lock()
	u.out = out
	u.mu.Unlock()
}

func (u *UART) dlab() bool { return u.lcr&lcrDLAB != 0 }
func (u *UART) loop() bool { return u.mcr&mcrLoop != 0 }

func (u *UART) addIntr(bit uint8) {
	u.iir &^= iirNone
	u.iir |= bit
}

func (u *UART) delIntr(bit uint8) {
	u.iir &^= bit
	if u.iir == 0 {
		u.iir = iirNone
	}
}

func (u *UART) trigger() {
	if u.irq == nil {
		return
	}
	if err := u.irq.Trigger(); err != nil {
		u.irqErrs++
	}
}

func (u *UART) thrEmpty() {
	if u.ier&ierTHR != 0 {
		u.addIntr(iirTHR)
		u.trigger()
	}
}

func (u *UART) recvData() {
	if u.ier&ierRecv != 0 {
		u.addIntr(iirRecv)
		u.trigger()
	}
	u.lsr |= lsrData
}

func (u *UART) push(b byte) {
	u.in[(u.inHead+u.inLen)%len(u.in)] = b
	u.inLen++
}

// Read implements bus.Device. Only 1-byte accesses are honoured, as upstream.
func (u *UART) Read(base, offset uint64, data []byte) {
	if len(data) != 1 {
		return
	}
	u.mu.Lock()
	data[0] = u.readReg(offset)
	u.mu.Unlock()
}

func (u *UART) readReg(offset uint64) uint8 {
	switch {
	case offset == regData && u.dlab():
		return uint8(u.divisor)
	case offset == regIER && u.dlab():
		return uint8(u.divisor >> 8)
	}
	switch offset {
	case regData:
		u.delIntr(iirRecv)
		if u.inLen <= 1 {
			u.lsr &^= lsrData
		}
		if u.inLen == 0 {
			return 0
		}
		b := u.in[u.inHead]
		u.inHead = (u.inHead + 1) % len(u.in)
		u.inLen--
		select { // wake a backend waiting for room; never blocks the vCPU
		case u.space <- struct{}{}:
		default:
		}
		return b
	case regIER:
		return u.ier
	case regIIR:
		v := u.iir | iirFIFOBits
		u.iir = defaultIIR // reading IIR acknowledges, as upstream's iir_reset
		return v
	case regLCR:
		return u.lcr
	case regMCR:
		return u.mcr
	case regLSR:
		return u.lsr
	case regMSR:
		return u.msr
	case regSCR:
		return u.scr
	}
	return 0
}

// Write implements bus.Device. Only 1-byte accesses are honoured.
func (u *UART) Write(base, offset uint64, data []byte) {
	if len(data) != 1 {
		return
	}
	v := data[0]
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case offset == regData && u.dlab():
		u.divisor = u.divisor&0xff00 | uint16(v)
		return
	case offset == regIER && u.dlab():
		u.divisor = u.divisor&0x00ff | uint16(v)<<8
		return
	}
	switch offset {
	case regData:
		if u.loop() {
			if u.inLen < loopSize {
				u.push(v)
				u.recvData()
			}
			return
		}
		u.txByte[0] = v
		if _, err := u.out.Write(u.txByte[:]); err != nil {
			u.outErrs++ // output loss must not stall the guest: THRE still fires
		}
		u.thrEmpty()
	case regIER:
		u.ier = v & ierFIFOBits
		u.reassert()
	case regLCR:
		u.lcr = v
	case regMCR:
		u.mcr = v
	case regSCR:
		u.scr = v
	}
}

// reassert raises interrupts whose conditions already hold once IER
// enables them (see the package comment).
func (u *UART) reassert() {
	raise := false
	if u.ier&ierRecv != 0 && u.inLen > 0 {
		u.addIntr(iirRecv)
		raise = true
	}
	if u.ier&ierTHR != 0 {
		u.addIntr(iirTHR)
		raise = true
	}
	if raise {
		u.trigger()
	}
}

// Enqueue offers host input to the guest and returns how many bytes the
// input FIFO accepted (possibly 0 when full). In loopback mode input is
// dropped and reported as accepted, as upstream ignores it. When fewer than
// len(p) bytes were taken, wait on Writable before retrying.
func (u *UART) Enqueue(p []byte) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.paused {
		return 0
	}
	if u.loop() {
		return len(p)
	}
	n := min(len(p), len(u.in)-u.inLen)
	for _, b := range p[:n] {
		u.push(b)
	}
	if n > 0 {
		u.recvData()
	}
	return n
}

// Writable is signalled (capacity 1, coalesced) whenever the guest reads a
// byte and so frees input space.
func (u *UART) Writable() <-chan struct{} { return u.space }

// Stats reports how many interrupt triggers and output writes failed.
func (u *UART) Stats() (irqErrors, outputErrors uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.irqErrs, u.outErrs
}

// Pause holds host input back (Enqueue takes nothing, so the console
// pump waits on Writable) until Resume: a paused guest gets no input and
// no interrupts, as upstream's paused serial manager.
func (u *UART) Pause() error {
	u.mu.Lock()
	u.paused = true
	u.mu.Unlock()
	return nil
}

// Resume lets host input in again and wakes a waiting pump.
func (u *UART) Resume() error {
	u.mu.Lock()
	u.paused = false
	u.mu.Unlock()
	select {
	case u.space <- struct{}{}:
	default:
	}
	return nil
}
