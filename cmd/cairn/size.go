package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
)

// envSnapshotMaxBytes is the environment variable of --snapshot-max-bytes.
const envSnapshotMaxBytes = "CAIRN_SNAPSHOT_MAX_BYTES"

// registerSnapshotMaxBytes adds --snapshot-max-bytes, the size limit the coordinator gives
// each job's snapshot store (CAIRN_SNAPSHOTS_<job>) when it creates it, to fs.
func registerSnapshotMaxBytes(fs *flag.FlagSet) *string {
	return fs.String("snapshot-max-bytes", os.Getenv(envSnapshotMaxBytes),
		"size limit of each job's snapshot store (CAIRN_SNAPSHOTS_<job>) when this process creates it, e.g. 2GiB, 512MiB or bytes; empty or -1: none of its own, the server's and account's storage limits bound it (an existing store keeps its limit) ["+"$"+envSnapshotMaxBytes+"]")
}

// sizeUnits are the suffixes parseSize accepts, longest first within each family.
var sizeUnits = []struct {
	suffix string
	factor int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1},
}

// parseSize parses a size for a --…-bytes flag: an integer number of bytes, optionally
// with a unit (KiB, MiB, GiB, TiB or KB, MB, GB, TB); "" means 0 (the default) and "-1"
// no limit.
func parseSize(flagName, s string) (int64, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "":
		return 0, nil
	case "-1":
		return -1, nil
	}
	num, factor := s, int64(1)
	for _, u := range sizeUnits {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, factor = strings.TrimSpace(n), u.factor
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/factor {
		return 0, fmt.Errorf("--%s %q: allowed: a positive number of bytes, optionally with a unit (KiB, MiB, GiB, TiB, KB, MB, GB, TB), or -1 for no limit", flagName, s)
	}
	return n * factor, nil
}

// envSharedSnapshotStore is the environment variable of --shared-snapshot-store.
const envSharedSnapshotStore = "CAIRN_SHARED_SNAPSHOT_STORE"

// registerSharedSnapshotStore registers --shared-snapshot-store, which coordinators and
// operators of a job must be given alike.
func registerSharedSnapshotStore(fs *flag.FlagSet) (*bool, error) {
	def, err := envBool(envSharedSnapshotStore)
	if err != nil {
		return nil, err
	}
	return fs.Bool("shared-snapshot-store", def, "keep every job's snapshots in the one store CAIRN_SNAPSHOTS instead of a store per job (CAIRN_SNAPSHOTS_<job>), as cairn dev does; NATS permissions cannot keep jobs apart in it. Give coordinators and operators the same choice [$"+envSharedSnapshotStore+"]"), nil
}
