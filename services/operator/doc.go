// Package operator is Cairn's reference operator, built on the runtime in pkg/operator.
//
// Aggregator is a keyed aggregator over JSON events {"key":"...","value":N}; Service runs
// it with a pkg/operator Runtime and serves its state as JSON on
// cairn.op.<job>.<instance>.state through the micro service "cairn-operator".
package operator
