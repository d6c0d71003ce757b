// Package aggregator is Cairn's reference operator, built on the runtime in pkg/operator.
//
// KeyedAggregator is a keyed aggregator over JSON events {"key":"...","value":N} whose
// per-key totals live in the SDK's keyed state store, checkpointed incrementally; Service
// runs it with a pkg/operator Runtime and serves its state as JSON on
// cairn.op.<job>.<instance>.state through the micro service "cairn-operator". Aggregator
// is the same logic on the whole-state Machine API (a snapshot is a copy of every key):
// an example of that API and the baseline the benchmarks compare the keyed store with.
package aggregator
