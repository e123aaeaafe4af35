package snapshot

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/memory"
)

// walk decodes every component's state of s, as a restore does, to depth
// 64 (encoding/json bounds the nesting of what ReadState accepts).
func walk(t *testing.T, s *Snapshot, depth int) {
	if s == nil || depth > 64 {
		return
	}
	var v map[string]any
	if err := s.Decode(&v); err != nil && !errors.Is(err, ErrFormat) {
		t.Fatalf("Decode error %v does not wrap ErrFormat", err)
	}
	var typed struct {
		Version int
		Regs    []uint32
		Data    []byte
	}
	_ = s.Decode(&typed)
	for id := range s.Snapshots {
		c, err := s.Child(id)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("Child error %v", err)
			}
			continue
		}
		walk(t, c, depth+1)
	}
}

// FuzzReadState reads arbitrary bytes as a snapshot's state.json and
// decodes the component tree, and an arbitrary memory range table (its
// JSON, as the memory manager's state carries it) over an arbitrary
// memory-ranges file into fresh guest RAM, by copy (ReadMemory) and by
// mapping (MapMemory). Everything must fail with an error or succeed
// within guest RAM and the file, never panic.
func FuzzReadState(f *testing.F) {
	root, _ := New(map[string]int{"Version": 3})
	child, _ := New(map[string]any{"Regs": []uint32{1, 2}})
	root.Add("cpu-manager", child)
	good, _ := json.Marshal(root)
	f.Add(good, []byte(`{"data":[{"gpa":0,"length":4096},{"gpa":1048576,"length":8192}]}`), uint32(3*4096), []byte("ram"))
	f.Add([]byte(`{"snapshots":{"a":null,"b":{"snapshot_data":{"state":"[1,"}}}}`), []byte(`{"data":[{"gpa":4096,"length":18446744073709547520},{"gpa":0,"length":8192}]}`), uint32(4096), []byte(nil))
	f.Add([]byte(`{"snapshot_data":null}`), []byte(`{"data":[{"gpa":1044480,"length":8192}]}`), uint32(8192), []byte("x"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, state, table []byte, fileSize uint32, data []byte) {
		for _, n := range []string{StateFile, MemoryFile} {
			os.Remove(filepath.Join(dir, n))
		}
		if err := os.WriteFile(filepath.Join(dir, StateFile), state, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := ReadState(dir)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("ReadState error %v does not wrap ErrFormat", err)
			}
		} else {
			walk(t, s, 0)
		}

		var rt RangeTable
		if json.Unmarshal(table, &rt) != nil || len(rt.Data) > 64 {
			return
		}
		p := filepath.Join(dir, MemoryFile)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, int64(fileSize%(4<<20))); err != nil {
			t.Fatal(err)
		}
		// Guest RAM [0, 2 MiB), fresh each time (MapMemory replaces its
		// pages with the file's).
		ram, err := memory.New(2<<20, memory.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer ram.Close()
		inRAM := func() bool {
			for _, r := range rt.Data {
				if r.GPA+r.Length < r.GPA || r.GPA+r.Length > 2<<20 {
					return false
				}
			}
			return true
		}
		if err := ReadMemory(dir, rt, ram, false); err == nil && (!inRAM() || rt.Size() != uint64(fileSize%(4<<20))) {
			t.Fatalf("ReadMemory of %+v from a %d-byte file succeeded", rt.Data, fileSize%(4<<20))
		}
		if err := MapMemory(dir, rt, ram); err == nil && !inRAM() {
			t.Fatalf("MapMemory of %+v succeeded", rt.Data)
		}
	})
}
