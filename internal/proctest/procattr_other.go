//go:build !linux

package proctest

import "syscall"

// sysProcAttr has nothing to add outside Linux; the test's cleanup stops the children.
func sysProcAttr() *syscall.SysProcAttr { return nil }
