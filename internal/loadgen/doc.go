// Package loadgen publishes reference-operator input events ({"key":"k3","value":7}) to
// cairn.input.<job>.<instance> at a steady rate, each with a Nats-Msg-Id so that a retried
// publish is stored once.
package loadgen
