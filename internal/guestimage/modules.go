package guestimage

// Kernel module dependency resolution. The format read and written is
// depmod's modules.dep (see depmod(8), modules.dep(5)): one line per module,
// "path: dep-path dep-path ...", paths relative to /lib/modules/<version>,
// listing every module the first one needs. Debian's linux-image .deb ships
// without modules.dep (its postinst runs depmod), so when the file is missing
// the index is built from each module's .modinfo ELF section ("depends=").

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/ulikunitz/xz"
)

// ErrModuleNotFound reports a requested module that is neither a loadable
// module nor built into the kernel.
var ErrModuleNotFound = errors.New("kernel module not found")

// Module is one loadable kernel module.
type Module struct {
	Name string   // canonical name, '-' replaced by '_' (as the kernel does)
	Path string   // path relative to the modules directory, as in modules.dep
	Deps []string // names of the modules it needs
}

// ModuleIndex knows the modules of one kernel's modules directory
// (/lib/modules/<version>).
type ModuleIndex struct {
	Dir     string
	mods    map[string]*Module
	builtin map[string]bool
}

var moduleSuffixes = []string{".ko.xz", ".ko.gz", ".ko"}

// ModuleName returns the canonical module name of a module file path.
func ModuleName(p string) string {
	b := path.Base(filepath.ToSlash(p))
	for _, s := range moduleSuffixes {
		if strings.HasSuffix(b, s) {
			b = strings.TrimSuffix(b, s)
			break
		}
	}
	return strings.ReplaceAll(b, "-", "_")
}

func isModuleFile(name string) bool {
	for _, s := range moduleSuffixes {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// LoadModuleIndex reads dir/modules.dep, or scans the module files when it
// is missing. dir/modules.builtin, if present, names modules that need no
// loading.
func LoadModuleIndex(dir string) (*ModuleIndex, error) {
	ix := &ModuleIndex{Dir: dir, mods: map[string]*Module{}, builtin: map[string]bool{}}
	if data, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(data)) {
			ix.builtin[ModuleName(l)] = true
		}
	}
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err == nil {
		defer f.Close()
		if err := ix.parseDep(f); err != nil {
			return nil, err
		}
		return ix, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %w", ErrImage, err)
	}
	if err := ix.scan(); err != nil {
		return nil, err
	}
	return ix, nil
}

// ParseModulesDep builds an index from modules.dep text; dir is where the
// listed paths are relative to.
func ParseModulesDep(dir string, r io.Reader) (*ModuleIndex, error) {
	ix := &ModuleIndex{Dir: dir, mods: map[string]*Module{}, builtin: map[string]bool{}}
	return ix, ix.parseDep(r)
}

func (ix *ModuleIndex) parseDep(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for line := 1; sc.Scan(); line++ {
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		p, deps, ok := strings.Cut(t, ":")
		if !ok {
			return fmt.Errorf("%w: modules.dep line %d: missing ':'", ErrImage, line)
		}
		m := &Module{Name: ModuleName(p), Path: strings.TrimSpace(p)}
		// depmod lists the nearest dependency first and modprobe loads
		// them from the end of the list; keep modprobe's order.
		ds := strings.Fields(deps)
		for i := len(ds) - 1; i >= 0; i-- {
			m.Deps = append(m.Deps, ModuleName(ds[i]))
		}
		ix.mods[m.Name] = m
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%w: modules.dep: %w", ErrImage, err)
	}
	return nil
}

func (ix *ModuleIndex) scan() error {
	err := filepath.WalkDir(ix.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !isModuleFile(d.Name()) {
			return nil
		}
		rel, err := filepath.Rel(ix.Dir, p)
		if err != nil {
			return err
		}
		m := &Module{Name: ModuleName(rel), Path: filepath.ToSlash(rel)}
		data, err := ix.Read(m)
		if err != nil {
			return err
		}
		info, err := modinfo(data)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if n := info["name"]; n != "" {
			m.Name = ModuleName(n)
		}
		for _, d := range strings.Split(info["depends"], ",") {
			if d != "" {
				m.Deps = append(m.Deps, ModuleName(d))
			}
		}
		ix.mods[m.Name] = m
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: scanning modules in %s: %w", ErrImage, ix.Dir, err)
	}
	if len(ix.mods) == 0 {
		return fmt.Errorf("%w: no kernel modules under %s", ErrModuleNotFound, ix.Dir)
	}
	return nil
}

// modinfo returns the key=value pairs of a module's .modinfo section.
func modinfo(ko []byte) (map[string]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, err
	}
	s := f.Section(".modinfo")
	if s == nil {
		return nil, errors.New("no .modinfo section")
	}
	data, err := s.Data()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok {
			out[k] = v
		}
	}
	return out, nil
}

// Lookup returns the module with the given name ('-' and '_' are equivalent).
func (ix *ModuleIndex) Lookup(name string) (*Module, bool) {
	m, ok := ix.mods[ModuleName(name)]
	return m, ok
}

// Resolve returns the named modules and everything they depend on, each
// once, in an order in which they can be loaded (dependencies first).
// Modules built into the kernel are skipped.
func (ix *ModuleIndex) Resolve(names ...string) ([]*Module, error) {
	var out []*Module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name, from string) error
	visit = func(name, from string) error {
		name = ModuleName(name)
		switch state[name] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("%w: dependency cycle at %s", ErrImage, name)
		}
		m, ok := ix.mods[name]
		if !ok {
			if ix.builtin[name] {
				state[name] = 2
				return nil
			}
			if from != "" {
				return fmt.Errorf("%w: %s (needed by %s) in %s", ErrModuleNotFound, name, from, ix.Dir)
			}
			return fmt.Errorf("%w: %s in %s", ErrModuleNotFound, name, ix.Dir)
		}
		state[name] = 1
		for _, d := range m.Deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = 2
		out = append(out, m)
		return nil
	}
	for _, n := range names {
		if err := visit(n, ""); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Read returns the module file's contents, decompressed.
func (ix *ModuleIndex) Read(m *Module) ([]byte, error) {
	raw, err := os.ReadFile(filepath.Join(ix.Dir, filepath.FromSlash(m.Path)))
	if err != nil {
		return nil, fmt.Errorf("%w: module %s: %w", ErrImage, m.Name, err)
	}
	var r io.Reader
	switch {
	case strings.HasSuffix(m.Path, ".xz"):
		xr, err := xz.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("%w: module %s: %w", ErrImage, m.Name, err)
		}
		r = xr
	case strings.HasSuffix(m.Path, ".gz"):
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("%w: module %s: %w", ErrImage, m.Name, err)
		}
		r = zr
	default:
		return raw, nil
	}
	out, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%w: module %s: %w", ErrImage, m.Name, err)
	}
	return out, nil
}

// plainPath is m.Path without a compression suffix: where the decompressed
// copy goes.
func plainPath(m *Module) string {
	return strings.TrimSuffix(strings.TrimSuffix(m.Path, ".xz"), ".gz")
}

// WriteModulesDep writes modules.dep lines for mods (as returned by
// Resolve), with decompressed paths and each module's full dependency list,
// nearest dependency first as depmod writes it.
func (ix *ModuleIndex) WriteModulesDep(w io.Writer, mods []*Module) error {
	return ix.writeDep(w, mods, plainPath)
}

// WriteAllModulesDep writes modules.dep for every module in the index, with
// the files' own (possibly compressed) paths, so that later loads need not
// scan the module files again.
func (ix *ModuleIndex) WriteAllModulesDep(w io.Writer) error {
	var mods []*Module
	for _, name := range sortedKeys(ix.mods) {
		mods = append(mods, ix.mods[name])
	}
	return ix.writeDep(w, mods, func(m *Module) string { return m.Path })
}

func (ix *ModuleIndex) writeDep(w io.Writer, mods []*Module, pathOf func(*Module) string) error {
	for _, m := range mods {
		deps, err := ix.Resolve(m.Name)
		if err != nil {
			return err
		}
		line := pathOf(m) + ":"
		for i := len(deps) - 2; i >= 0; i-- { // the last one is m itself
			line += " " + pathOf(deps[i])
		}
		if _, err := io.WriteString(w, line+"\n"); err != nil {
			return err
		}
	}
	return nil
}

// AddModules puts the named modules and their dependencies, decompressed,
// under /lib/modules/ in the image and returns their guest paths in load
// order, for insmod.
func (b *Builder) AddModules(ix *ModuleIndex, names ...string) ([]string, error) {
	mods, err := ix.Resolve(names...)
	if err != nil {
		return nil, err
	}
	var paths []string
	for _, m := range mods {
		data, err := ix.Read(m)
		if err != nil {
			return nil, err
		}
		gp := "/lib/modules/" + m.Name + ".ko"
		if err := b.AddFile(gp, data, 0o644); err != nil {
			return nil, err
		}
		paths = append(paths, gp)
	}
	return paths, nil
}

// ExportModules writes a pruned copy of the modules directory to dst holding
// only the named modules and their dependencies (decompressed), a matching
// modules.dep and modules.builtin, so that a guest image can be built from it
// elsewhere (inside the sandbox) without shipping the whole tree.
func (ix *ModuleIndex) ExportModules(dst string, names ...string) error {
	mods, err := ix.Resolve(names...)
	if err != nil {
		return err
	}
	for _, m := range mods {
		data, err := ix.Read(m)
		if err != nil {
			return err
		}
		p := filepath.Join(dst, filepath.FromSlash(plainPath(m)))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("%w: %w", ErrImage, err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return fmt.Errorf("%w: %w", ErrImage, err)
		}
	}
	var dep bytes.Buffer
	if err := ix.WriteModulesDep(&dep, mods); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dst, "modules.dep"), dep.Bytes(), 0o644); err != nil {
		return fmt.Errorf("%w: %w", ErrImage, err)
	}
	var bi bytes.Buffer
	for _, n := range sortedKeys(ix.builtin) {
		fmt.Fprintf(&bi, "%s.ko\n", n)
	}
	if err := os.WriteFile(filepath.Join(dst, "modules.builtin"), bi.Bytes(), 0o644); err != nil {
		return fmt.Errorf("%w: %w", ErrImage, err)
	}
	return nil
}
