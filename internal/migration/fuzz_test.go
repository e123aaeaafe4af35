package migration

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"runtime/metrics"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/memory"
)

// fuzzTarget is a destination VM over real guest RAM (internal/memory):
// Memory requests write into it at the sender's addresses.
type fuzzTarget struct {
	ram  *memory.Memory
	done bool
}

func (t *fuzzTarget) MemoryFd(uint32, *os.File) error { return errors.New("no local migration here") }
func (t *fuzzTarget) Configure(c []byte) (RAM, error) {
	if bytes.Equal(c, []byte("refuse")) {
		return nil, errors.New("refused config")
	}
	return t.ram, nil
}
func (t *fuzzTarget) Restore([]byte) error { return nil }
func (t *fuzzTarget) Complete(bool) error  { t.done = true; return nil }

// peer is a sender's side of a connection: what it sends, and a sink for
// the receiver's responses.
type peer struct {
	io.Reader
	out bytes.Buffer
}

func (p *peer) Write(b []byte) (int, error) { return p.out.Write(b) }

// allocated is the bytes the Go heap allocated so far.
func allocated() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func fuzzRequest(cmd Command, payload []byte) []byte {
	r := Request{Command: cmd, Length: uint64(len(payload))}
	b, _ := r.MarshalBinary()
	return append(b, payload...)
}

// FuzzReceive plays arbitrary bytes as the sender of an incoming
// migration: requests in any order, any command and header, any payload
// length, memory range tables pointing anywhere. Receive must return (nil
// only after Complete) without panicking, write guest RAM only through
// its bounds-checked Slice, answer every request it read, and never
// allocate more than the protocol's payload bound (maxPayload) beyond
// what the peer actually sent.
func FuzzReceive(f *testing.F) {
	mem := EncodeRanges([]Range{{GPA: 0x1000, Length: 8}, {GPA: 0xfff0, Length: 0x20}})
	good := bytes.Join([][]byte{
		fuzzRequest(CmdStart, nil), fuzzRequest(CmdConfig, []byte(`{"vm_config":{}}`)),
		fuzzRequest(CmdMemory, mem), []byte("12345678"), bytes.Repeat([]byte{7}, 0x20),
		fuzzRequest(CmdState, []byte(`{}`)), fuzzRequest(CmdComplete, nil),
	}, nil)
	f.Add(good)
	f.Add(good[:40])
	f.Add(bytes.Join([][]byte{fuzzRequest(CmdStart, nil), fuzzRequest(CmdConfig, []byte("refuse"))}, nil))
	f.Add(bytes.Join([][]byte{fuzzRequest(CmdStart, nil), fuzzRequest(CmdMemoryFd, []byte{0, 0, 0, 0})}, nil))
	f.Add(bytes.Join([][]byte{fuzzRequest(CmdStart, nil), fuzzRequest(CmdConfig, nil),
		fuzzRequest(CmdMemory, EncodeRanges([]Range{{GPA: ^uint64(0) - 4, Length: 8}}))}, nil))
	huge := fuzzRequest(CmdStart, nil)
	huge = append(huge, fuzzRequest(CmdConfig, nil)...)
	binary.LittleEndian.PutUint64(huge[len(huge)-8:], 1<<40)
	f.Add(huge)
	f.Add(fuzzRequest(CmdAbandon, nil))
	ram, err := memory.New(1<<20, memory.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ram.Close() })
	tgt := &fuzzTarget{ram: ram}
	f.Fuzz(func(t *testing.T, data []byte) {
		tgt.done = false
		p := &peer{Reader: bytes.NewReader(data)}
		before := allocated()
		err := Receive(p, tgt)
		if grew := allocated() - before; grew > maxPayload+64*uint64(len(data))+1<<20 {
			t.Fatalf("receiving %d bytes allocated %d", len(data), grew)
		}
		if (err == nil) != tgt.done {
			t.Fatalf("Receive returned %v with Complete called %v", err, tgt.done)
		}
		if p.out.Len()%HeaderSize != 0 {
			t.Fatalf("%d bytes of responses", p.out.Len())
		}
		for b := p.out.Bytes(); len(b) > 0; b = b[HeaderSize:] {
			var r Response
			if err := r.UnmarshalBinary(b[:HeaderSize]); err != nil {
				t.Fatalf("response % x: %v", b[:HeaderSize], err)
			}
		}
	})
}

// FuzzWire decodes arbitrary bytes as a request, a response, a memory
// range table and a response to a request: decoders must fail or round
// trip exactly.
func FuzzWire(f *testing.F) {
	f.Add(fuzzRequest(CmdMemory, nil))
	f.Add(EncodeRanges([]Range{{GPA: 1, Length: 2}, {GPA: 3, Length: 4}}))
	b, _ := Response{Status: StatusOK}.MarshalBinary()
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) >= HeaderSize {
			var r Request
			if err := r.UnmarshalBinary(data[:HeaderSize]); err == nil {
				if out, _ := r.MarshalBinary(); !bytes.Equal(out, data[:HeaderSize]) {
					t.Fatalf("request % x re-encodes as % x", data[:HeaderSize], out)
				}
			} else if !errors.Is(err, ErrProtocol) {
				t.Fatalf("request error %v", err)
			}
			var s Response
			if err := s.UnmarshalBinary(data[:HeaderSize]); err == nil {
				if s.Status != StatusOK && s.Status != StatusError {
					t.Fatalf("status %d accepted", s.Status)
				}
			} else if !errors.Is(err, ErrProtocol) {
				t.Fatalf("response error %v", err)
			}
		}
		if rs, err := DecodeRanges(data); err == nil {
			if !bytes.Equal(EncodeRanges(rs), data) {
				t.Fatal("range table does not round trip")
			}
		} else if !errors.Is(err, ErrProtocol) || len(data)%16 == 0 {
			t.Fatalf("range table of %d bytes: %v", len(data), err)
		}
		_ = expectOK(bytes.NewReader(data), CmdStart)
	})
}
