package distro

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// terminal is the test's end of a guest console pty: what the guest
// writes is collected, and Expect waits for text to appear after the
// last match, as a person reads a screen.
type terminal struct {
	f    *os.File
	mu   sync.Mutex
	out  strings.Builder
	seen int           // out[:seen] has been matched
	last time.Time     // when the guest last wrote
	more chan struct{} // signalled (never blocking) on new output
	done chan struct{} // closed when the reader stops
}

// openTerminal opens the pty at path in raw mode (no echo or line
// editing on the test's side: a guest's "login: " has no newline); the
// test's cleanup closes it and waits for the reader.
func openTerminal(t *testing.T, path string) *terminal {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening the console pty: %v", err)
	}
	// Not f.Fd(): that would put the file in blocking mode, and Close
	// would then not end a pending Read.
	rc, err := f.SyscallConn()
	if err == nil {
		cerr := rc.Control(func(fd uintptr) { _, err = term.MakeRaw(int(fd)) })
		if err == nil {
			err = cerr
		}
	}
	if err != nil {
		f.Close()
		t.Fatalf("raw mode on %s: %v", path, err)
	}
	c := &terminal{f: f, more: make(chan struct{}, 1), done: make(chan struct{}), last: time.Now()}
	go c.read()
	t.Cleanup(func() { f.Close(); <-c.done })
	return c
}

func (c *terminal) read() {
	defer close(c.done)
	buf := make([]byte, 4096)
	for {
		n, err := c.f.Read(buf)
		if n > 0 {
			if showConsole {
				os.Stdout.Write(buf[:n])
			}
			c.mu.Lock()
			c.out.Write(buf[:n])
			c.last = time.Now()
			c.mu.Unlock()
			select {
			case c.more <- struct{}{}:
			default:
			}
		}
		if err != nil {
			return // closed by the test, or the VMM went away (EIO)
		}
	}
}

// showConsole copies the guest's console to the test's stdout as it comes
// (NIMBUS_SHOW_CONSOLE=1; `make demo-debian` sets it).
var showConsole = os.Getenv("NIMBUS_SHOW_CONSOLE") == "1"

// ansi matches the terminal control sequences a shell or systemd writes
// (colours, bracketed paste mode).
var ansi = regexp.MustCompile(`\x1b\[[0-9;?]*[a-zA-Z]`)

// plain is console text as a person reads it: no control sequences, no
// carriage returns.
func plain(s string) string { return strings.ReplaceAll(ansi.ReplaceAllString(s, ""), "\r", "") }

// Text is everything the guest wrote so far.
func (c *terminal) Text() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

// Expect waits until want appears after the previous match and returns
// the text from the previous match to the end of this one.
func (c *terminal) Expect(ctx context.Context, want string) (string, error) {
	return c.ExpectQuiet(ctx, want, 0)
}

// ExpectQuiet is Expect that also gives up when the guest has written
// nothing for silence (0: no limit): a booting systemd never pauses that
// long, and a nested guest that froze should fail its try early.
func (c *terminal) ExpectQuiet(ctx context.Context, want string, silence time.Duration) (string, error) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		c.mu.Lock()
		s := c.out.String()
		if i := strings.Index(s[c.seen:], want); i >= 0 {
			got := s[c.seen : c.seen+i+len(want)]
			c.seen += i + len(want)
			c.mu.Unlock()
			return got, nil
		}
		c.mu.Unlock()
		select {
		case <-c.more:
		case <-c.done:
			// The reader stopped: one more look at what it left.
			if strings.Contains(c.Text()[c.seen:], want) {
				continue
			}
			return "", fmt.Errorf("console closed before %q", want)
		case <-ctx.Done():
			return "", fmt.Errorf("no %q on the console: %w", want, ctx.Err())
		case <-tick.C:
			c.mu.Lock()
			quiet := time.Since(c.last)
			c.mu.Unlock()
			if silence > 0 && quiet > silence {
				return "", fmt.Errorf("no %q on the console, which has been silent for %v", want, quiet.Round(time.Second))
			}
		}
	}
}

// Type sends a line as typed on a terminal (Enter is a carriage return).
func (c *terminal) Type(line string) error {
	_, err := c.f.WriteString(line + "\r")
	return err
}

// Dialogue types line and waits for want, within d.
func (c *terminal) Dialogue(ctx context.Context, line, want string, d time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := c.Type(line); err != nil {
		return "", err
	}
	return c.Expect(ctx, want)
}
