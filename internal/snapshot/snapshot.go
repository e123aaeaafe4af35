// Package snapshot is the on-disk form of a VM snapshot, upstream's
// layout (vmm/src/migration, vm-migration's Snapshot): a directory named
// by a file:// URL holding config.json (the VmConfig), state.json (a tree
// of component states) and memory-ranges (guest RAM, the ranges of the
// memory manager's table one after the other, with holes where RAM is
// zero).
package snapshot

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// File names inside a snapshot directory, as upstream.
const (
	ConfigFile = "config.json"
	StateFile  = "state.json"
	MemoryFile = "memory-ranges"
)

// Errors; match with errors.Is.
var (
	// ErrURL: the URL is not file://<existing directory>.
	ErrURL = errors.New("bad snapshot URL")
	// ErrFormat: a snapshot file cannot be read as this Nimbus writes it.
	ErrFormat = errors.New("bad snapshot")
)

// Dir returns the directory a file:// URL names; it must exist (upstream's
// url_to_path, with its error texts).
func Dir(url string) (string, error) {
	p, ok := strings.CutPrefix(url, "file://")
	if !ok {
		return "", urlError("Could not extract path from URL: " + url)
	}
	if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
		return "", urlError(fmt.Sprintf("Destination is not a directory: %q", p))
	}
	return p, nil
}

// urlError is upstream's message alone; it matches ErrURL.
type urlError string

func (e urlError) Error() string        { return string(e) }
func (e urlError) Is(target error) bool { return target == ErrURL }

// Snapshot is one component's state and its children's (upstream's
// vm_migration::Snapshot): the state is JSON inside a JSON string, as
// upstream serialises it.
type Snapshot struct {
	Snapshots    map[string]*Snapshot `json:"snapshots"`
	SnapshotData *Data                `json:"snapshot_data"`
}

// Data is a component's own state (upstream's SnapshotData).
type Data struct {
	State string `json:"state"`
}

// New returns a snapshot holding state (JSON-encoded) and no children.
func New(state any) (*Snapshot, error) {
	b, err := json.Marshal(state)
	if err != nil {
		return nil, err
	}
	return &Snapshot{Snapshots: map[string]*Snapshot{}, SnapshotData: &Data{State: string(b)}}, nil
}

// Add makes child the snapshot of component id.
func (s *Snapshot) Add(id string, child *Snapshot) {
	if s.Snapshots == nil {
		s.Snapshots = map[string]*Snapshot{}
	}
	s.Snapshots[id] = child
}

// Child returns component id's snapshot.
func (s *Snapshot) Child(id string) (*Snapshot, error) {
	c := s.Snapshots[id]
	if c == nil {
		return nil, fmt.Errorf("no state for %q: %w", id, ErrFormat)
	}
	return c, nil
}

// Decode decodes the component's own state into v.
func (s *Snapshot) Decode(v any) error {
	if s.SnapshotData == nil {
		return fmt.Errorf("no state data: %w", ErrFormat)
	}
	if err := json.Unmarshal([]byte(s.SnapshotData.State), v); err != nil {
		return fmt.Errorf("%w: %w", ErrFormat, err)
	}
	return nil
}

// create makes dir/name, failing if it exists (upstream opens with
// create_new).
func create(dir, name string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
}

// WriteConfig writes config.json.
func WriteConfig(dir string, cfg any) error {
	return writeJSON(dir, ConfigFile, "VM config", cfg)
}

// WriteState writes state.json.
func WriteState(dir string, s *Snapshot) error {
	return writeJSON(dir, StateFile, "VM state", s)
}

func writeJSON(dir, name, what string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("Error serializing %s snapshot: %w", what, err)
	}
	f, err := create(dir, name)
	if err != nil {
		return fmt.Errorf("Error creating %s snapshot file: %w", what, err)
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("Error writing %s snapshot: %w", what, err)
	}
	return nil
}

// ReadConfig returns config.json's bytes (the caller decodes the
// VmConfig with its defaults).
func ReadConfig(dir string) ([]byte, error) {
	p := filepath.Join(dir, ConfigFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("Error opening VM config snapshot file %q: %w", p, err)
	}
	return b, nil
}

// ReadState reads state.json.
func ReadState(dir string) (*Snapshot, error) {
	s := &Snapshot{}
	if err := readJSON(dir, StateFile, "VM state", s); err != nil {
		return nil, err
	}
	return s, nil
}

func readJSON(dir, name, what string, v any) error {
	p := filepath.Join(dir, name)
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("Error opening %s snapshot file %q: %w", what, p, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("Error deserialising %s snapshot: %w: %w", what, ErrFormat, err)
	}
	return nil
}
