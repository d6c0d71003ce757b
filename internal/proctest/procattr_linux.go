package proctest

import "syscall"

// sysProcAttr makes the kernel SIGKILL a child when the test process dies, so that a test
// killed by its timeout leaves no processes behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
