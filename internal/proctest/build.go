package proctest

import (
	"fmt"
	"os"
	"os/exec"
)

// CairnPackage is the import path of the cairn binary.
const CairnPackage = "github.com/cairn-stream/cairn/cmd/cairn"

// Build runs `go build -o out pkg` with env added to the environment; pkg is an import path
// (CairnPackage, or a dependency of the module such as github.com/nats-io/nats-server/v2).
func Build(out, pkg string, env ...string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}
