module github.com/nimbus-vmm/nimbus

go 1.26.8
