package operator_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportGraph keeps the promise of a library others embed: importing pkg/operator
// compiles in no nats-server, no zerolog and no test helper.
func TestImportGraph(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list the dependencies with")
	}
	out, err := exec.Command(gobin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed %d packages: %s", len(deps), out)
	}
	for _, d := range deps {
		for _, banned := range []string{"github.com/nats-io/nats-server", "github.com/rs/zerolog", "/internal/natstest", "/pkg/embedded", "/pkg/operator/operatortest"} {
			if strings.Contains(d, banned) {
				t.Errorf("pkg/operator depends on %s", d)
			}
		}
	}
}
