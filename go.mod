module github.com/nimbus-vmm/nimbus

go 1.26.8

require (
	github.com/creack/pty v1.1.24 // indirect
	github.com/getkin/kin-openapi v0.153.0 // indirect
	go.uber.org/goleak v1.3.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/term v0.48.0 // indirect
)
