package migration

import (
	"context"
	"fmt"
	"net"
	"strings"
)

// Endpoint splits a migration URL into a net network and address:
// "unix:<path>" or "tcp:<host>:<port>", as upstream's transport.
func Endpoint(url string) (network, addr string, err error) {
	switch {
	case strings.HasPrefix(url, "unix:"):
		if p := strings.TrimPrefix(url, "unix:"); p != "" {
			return "unix", p, nil
		}
	case strings.HasPrefix(url, "tcp:"):
		a := strings.TrimPrefix(url, "tcp:")
		if _, _, err := net.SplitHostPort(a); err == nil {
			return "tcp", a, nil
		}
	}
	return "", "", fmt.Errorf("%q is neither unix:<path> nor tcp:<host>:<port>: %w", url, ErrURL)
}

// Listen listens on a migration URL.
func Listen(url string) (net.Listener, error) {
	network, addr, err := Endpoint(url)
	if err != nil {
		return nil, err
	}
	return net.Listen(network, addr)
}

// Dial connects to a migration URL.
func Dial(ctx context.Context, url string) (net.Conn, error) {
	network, addr, err := Endpoint(url)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}
