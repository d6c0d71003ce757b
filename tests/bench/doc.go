// Package bench measures Cairn end to end on an embedded nats-server and puts every
// figure next to the raw NATS floor measured in the same run:
//
//   - BenchmarkConfigSetApplied: config set→applied (and set→barrier) latency, against a
//     raw JetStream publish→consume plus a raw request round trip;
//   - BenchmarkBarrierEmission: |gap between barriers − 100ms| at interval 100ms, against a
//     Go timer publishing in the same rhythm;
//   - BenchmarkCheckpoint8x1MiB: trigger→completed for 8 operator runtimes with 1 MiB of
//     state each, against 8 parallel object-store puts of 1 MiB;
//   - BenchmarkCoordinatorFleet: one `cairn coordinator` process driving 1000 jobs × 4
//     simulated operators at 1 s: its CPU share and CPU per checkpoint, barrier lateness
//     against a fan-out of Go timers, completions and aborts. It takes minutes and runs
//     only with CAIRN_FLEET=1 (-bench CoordinatorFleet -benchtime=1x; CAIRN_FLEET_JOBS,
//     CAIRN_FLEET_INSTANCES, CAIRN_FLEET_WINDOW change its shape);
//   - BenchmarkIdleJobs: what 10 000 jobs with no registered instance cost one `cairn
//     coordinator` process (goal: under 1 % of a core); only with CAIRN_IDLE=1
//     (CAIRN_IDLE_JOBS, CAIRN_IDLE_WINDOW);
//   - BenchmarkKeyedState: the keyed state store's incremental checkpoints next to the
//     whole-state path on the same workload (1 M keys × 64 B, 1 % changed per interval, at
//     1 s and 100 ms): bytes written ÷ bytes changed, trigger→completed, records/s with
//     100 ms checkpoints ÷ with none, restore ÷ a raw get of the same objects, heap ÷ raw
//     bytes, bytes held in the snapshot store. It takes minutes and runs only with
//     CAIRN_KEYED=1 (-bench KeyedState -benchtime=1x; CAIRN_KEYED_KEYS and
//     CAIRN_KEYED_WINDOW change its shape).
//
// Each benchmark reports p50 and p99 in milliseconds, its floor's p50 and p99 and the
// ratios with b.ReportMetric, and logs a small table. One loop iteration is one sample, so
// -benchtime=200x gives 200 samples per figure; ns/op is suppressed as meaningless.
// Nothing is asserted about speed (BenchmarkIdleJobs aside, whose goal is a bound). Run them
// (about 1.5 minutes on 2 cores without the fleet):
//
//	go test -run '^$' -bench . -benchtime=200x ./tests/bench/
//
// The short mode (-short) runs every benchmark once, the keyed, fleet and idle ones
// included, on small shapes, as .ci/run does so that a benchmark that breaks fails CI:
//
//	go test -short -run '^$' -bench . -benchtime=1x -timeout 10m ./tests/bench/
//
// docs/bench.md explains each figure and records measured values.
package bench
