package debimage

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// AptMirror is the archive URI the host's apt sources use for suite (deb822
// .sources files first, then one-line lists), not its -security archive:
// debootstrap fetches from where the machine already fetches, and no host
// name is written into the repository.
func AptMirror(suite string) (string, error) {
	var texts []string
	for _, g := range []string{"/etc/apt/sources.list.d/*.sources", "/etc/apt/sources.list", "/etc/apt/sources.list.d/*.list"} {
		m, _ := filepath.Glob(g)
		for _, f := range m {
			if b, err := os.ReadFile(f); err == nil {
				texts = append(texts, string(b))
			}
		}
	}
	if uri := mirrorIn(suite, texts...); uri != "" {
		return uri, nil
	}
	return "", fmt.Errorf("%w: no archive for suite %q in the apt sources (/etc/apt/sources.list*)", ErrImage, suite)
}

// mirrorIn finds suite's archive in apt source texts, deb822 or one-line.
func mirrorIn(suite string, texts ...string) string {
	for _, text := range texts {
		var uris []string
		match := false
		flush := func() (string, bool) {
			defer func() { uris, match = nil, false }()
			for _, u := range uris {
				if match && !strings.Contains(u, "security") {
					return u, true
				}
			}
			return "", false
		}
		for _, line := range strings.Split(text+"\n\n", "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) == 0:
				if u, ok := flush(); ok {
					return u
				}
			case strings.EqualFold(f[0], "URIs:"):
				uris = f[1:]
			case strings.EqualFold(f[0], "Suites:"):
				for _, s := range f[1:] {
					match = match || s == suite
				}
			case f[0] == "deb":
				f = f[1:]
				if len(f) > 0 && strings.HasPrefix(f[0], "[") { // [options]
					for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
						f = f[1:]
					}
					if len(f) > 0 {
						f = f[1:]
					}
				}
				if len(f) >= 2 && f[1] == suite && !strings.Contains(f[0], "security") {
					return f[0]
				}
			}
		}
	}
	return ""
}
