package serial

import (
	"encoding/json"
	"fmt"
)

// state is the UART's registers and received bytes not yet read, for
// snapshots.
type state struct {
	IER, IIR, LCR, MCR, LSR, MSR, SCR uint8
	Divisor                           uint16
	Input                             []byte `json:",omitempty"`
}

// StateID implements devmgr.Stateful.
func (u *UART) StateID() string { return "serial/v1" }

// SaveState implements devmgr.Stateful.
func (u *UART) SaveState() ([]byte, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := state{IER: u.ier, IIR: u.iir, LCR: u.lcr, MCR: u.mcr, LSR: u.lsr, MSR: u.msr, SCR: u.scr, Divisor: u.divisor}
	for i := range u.inLen {
		s.Input = append(s.Input, u.in[(u.inHead+i)%len(u.in)])
	}
	return json.Marshal(s)
}

// RestoreState implements devmgr.Stateful.
func (u *UART) RestoreState(b []byte) error {
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("serial state: %w", err)
	}
	if len(s.Input) > len(u.in) {
		return fmt.Errorf("serial state: %d input bytes, the buffer holds %d", len(s.Input), len(u.in))
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.ier, u.iir, u.lcr, u.mcr, u.lsr, u.msr, u.scr, u.divisor = s.IER, s.IIR, s.LCR, s.MCR, s.LSR, s.MSR, s.SCR, s.Divisor
	u.inHead, u.inLen = 0, copy(u.in[:], s.Input)
	return nil
}
