package migration

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// Source is the VM a migration sends. The sender owns it while the
// migration runs.
type Source interface {
	// RAM is what the first round sends: all guest RAM the guest may
	// have written (the destination's fresh RAM is zeros).
	RAM() ([]Range, error)
	// Slice is the host mapping of [gpa, gpa+n), inside one RAM range.
	Slice(gpa, n uint64) ([]byte, error)
	// StartDirtyLog starts recording written pages; DirtyRanges returns
	// and clears them (final: with the devices stopped, every page a
	// device may have written); StopDirtyLog ends the recording.
	StartDirtyLog() error
	DirtyRanges(final bool) ([]Range, error)
	StopDirtyLog() error
	// Pause stops the vCPUs and devices for the last round (a paused VM
	// stays paused).
	Pause() error
	// State is the paused VM's state for the destination.
	State() ([]byte, error)
}

// SendOptions are the precopy parameters (VmSendMigrationData).
type SendOptions struct {
	// Downtime is the longest the last round, with the VM paused, may be
	// expected to take: rounds go on until the dirty memory can be sent in
	// that time at the bandwidth measured so far.
	Downtime time.Duration
	// Timeout bounds the precopy rounds; then the migration fails, or with
	// IgnoreTimeout goes to the last round anyway.
	Timeout       time.Duration
	IgnoreTimeout bool
	// WasPaused: the VM was paused when the migration started, so the
	// destination leaves it paused (CompletePaused).
	WasPaused bool
	// Iteration reports each finished precopy round (upstream's
	// migration-memory-iteration event); nil ignores them.
	Iteration func(n int)
	// MemoryFDs, when not nil, make this a local migration (upstream's
	// local=true, over a Unix socket only): guest RAM is handed over as
	// these memfds, slot i being the i-th, instead of being copied.
	MemoryFDs []int
}

// Stats describe a finished migration.
type Stats struct {
	Rounds    int           // memory rounds, the last one included
	Bytes     uint64        // guest memory sent
	LastBytes uint64        // sent in the last round, with the VM paused
	Downtime  time.Duration // from the pause to the destination's OK to Complete
	Total     time.Duration
}

// Send migrates src over conn: Start, Config (config, upstream's
// VmMigrationConfig as JSON), memory rounds while the VM runs until they
// converge, then with the VM paused the last dirty memory, the State and
// Complete. On error it tries to tell the destination to abandon; the
// caller resumes the VM.
func Send(conn net.Conn, config []byte, src Source, opts SendOptions) (st Stats, err error) {
	begin := time.Now()
	defer func() {
		if err != nil {
			// Best effort: a destination that already gave up reads nothing.
			_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
			_ = writeRequest(conn, CmdAbandon, nil)
		}
	}()
	if err := roundTrip(conn, CmdStart, nil); err != nil {
		return st, fmt.Errorf("Error starting migration: %w", err)
	}
	if opts.MemoryFDs != nil {
		if err := sendMemoryFDs(conn, opts.MemoryFDs); err != nil {
			return st, err
		}
	}
	if err := roundTrip(conn, CmdConfig, config); err != nil {
		return st, fmt.Errorf("Error sending VM config: %w", err)
	}
	if opts.MemoryFDs != nil {
		paused := time.Now()
		if err := src.Pause(); err != nil {
			return st, err
		}
		if err := finish(conn, src, opts); err != nil {
			return st, err
		}
		st.Downtime, st.Total = time.Since(paused), time.Since(begin)
		return st, nil
	}
	if err := src.StartDirtyLog(); err != nil {
		return st, err
	}
	// Round 0: all the RAM the guest may have written, while it runs.
	ranges, err := src.RAM()
	if err != nil {
		return st, err
	}
	var pending []Range // dirty ranges the converged check left for the last round
	precopy := time.Now()
	for round := 0; ; round++ {
		t0 := time.Now()
		n, err := sendMemory(conn, src, ranges)
		st.Bytes += n
		if err != nil {
			return st, err
		}
		st.Rounds++
		if opts.Iteration != nil {
			opts.Iteration(round)
		}
		bw := float64(n) / max(time.Since(t0).Seconds(), 1e-6) // bytes/s of this round
		if ranges, err = src.DirtyRanges(false); err != nil {
			return st, err
		}
		dirty := rangeBytes(ranges)
		est := time.Duration(float64(dirty) / bw * float64(time.Second))
		if dirty == 0 || (n > 0 && est <= opts.Downtime) {
			pending = ranges
			break
		}
		if time.Since(precopy) >= opts.Timeout {
			if !opts.IgnoreTimeout {
				return st, fmt.Errorf("Precopy: Timeout reached: %ds: migration didn't converge in time", int(opts.Timeout.Seconds()))
			}
			pending = ranges
			break
		}
	}
	paused := time.Now()
	if err := src.Pause(); err != nil {
		return st, err
	}
	last, err := src.DirtyRanges(true)
	if err != nil {
		return st, err
	}
	n, err := sendMemory(conn, src, merge(pending, last))
	st.Bytes, st.LastBytes = st.Bytes+n, n
	if err != nil {
		return st, err
	}
	st.Rounds++
	if err := finish(conn, src, opts); err != nil {
		return st, err
	}
	st.Downtime, st.Total = time.Since(paused), time.Since(begin)
	return st, nil
}

// finish sends the paused VM's state and completes the migration.
func finish(conn net.Conn, src Source, opts SendOptions) error {
	state, err := src.State()
	if err != nil {
		return err
	}
	if err := roundTrip(conn, CmdState, state); err != nil {
		return fmt.Errorf("Error sending VM state: %w", err)
	}
	complete := CmdComplete
	if opts.WasPaused {
		complete = CmdCompletePaused
	}
	if err := roundTrip(conn, complete, nil); err != nil {
		return fmt.Errorf("Error completing migration: %w", err)
	}
	return nil
}

// sendMemoryFDs hands guest RAM over: one MemoryFd request per memfd, its
// slot number (u32) sent with the fd attached (SCM_RIGHTS).
func sendMemoryFDs(conn net.Conn, fds []int) error {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("--local option is only supported with UNIX sockets: %w", ErrURL)
	}
	for slot, fd := range fds {
		if fd < 0 {
			return fmt.Errorf("Local migration requires shared memory (shared=on): %w", ErrProtocol)
		}
		r := Request{Command: CmdMemoryFd, Length: 4}
		b, _ := r.MarshalBinary()
		if _, err := uc.Write(b); err != nil {
			return fmt.Errorf("Error sending memory fd request: %w", err)
		}
		var p [4]byte
		binary.LittleEndian.PutUint32(p[:], uint32(slot))
		if _, _, err := uc.WriteMsgUnix(p[:], unix.UnixRights(fd), nil); err != nil {
			return fmt.Errorf("Error sending memory fd: %w", err)
		}
		if err := expectOK(uc, CmdMemoryFd); err != nil {
			return fmt.Errorf("Error during memory fd migration: %w", err)
		}
	}
	return nil
}

func roundTrip(conn io.ReadWriter, cmd Command, payload []byte) error {
	if err := writeRequest(conn, cmd, payload); err != nil {
		return err
	}
	return expectOK(conn, cmd)
}

// sendMemory sends one Memory request: the range table, then the ranges'
// bytes, and waits for the OK. An empty table is not sent.
func sendMemory(conn io.ReadWriter, src Source, ranges []Range) (uint64, error) {
	if len(ranges) == 0 {
		return 0, nil
	}
	if err := writeRequest(conn, CmdMemory, EncodeRanges(ranges)); err != nil {
		return 0, err
	}
	var n uint64
	for _, r := range ranges {
		b, err := src.Slice(r.GPA, r.Length)
		if err != nil {
			return n, err
		}
		if _, err := conn.Write(b); err != nil {
			return n, fmt.Errorf("sending memory: %w", err)
		}
		n += r.Length
	}
	return n, expectOK(conn, CmdMemory)
}

func rangeBytes(rs []Range) uint64 {
	var n uint64
	for _, r := range rs {
		n += r.Length
	}
	return n
}

// merge returns a and b's ranges in GPA order, overlapping ones joined.
// Touching ones are not: they may lie in different host mappings.
func merge(a, b []Range) []Range {
	all := append(append([]Range(nil), a...), b...)
	if len(all) == 0 {
		return nil
	}
	sortRanges(all)
	out := []Range{all[0]}
	for _, r := range all[1:] {
		l := &out[len(out)-1]
		if r.GPA < l.GPA+l.Length {
			l.Length = max(l.GPA+l.Length, r.GPA+r.Length) - l.GPA
			continue
		}
		out = append(out, r)
	}
	return out
}

func sortRanges(rs []Range) {
	slices.SortFunc(rs, func(a, b Range) int { return cmp.Compare(a.GPA, b.GPA) })
}
