// Command cairn runs Cairn's services: `cairn dev` runs everything on an embedded NATS
// server; `cairn configsvc`, `cairn coordinator` and `cairn operator` run one service
// against NATS_URL; `cairn loadgen` feeds reference operators; `cairn health` probes a
// service's health endpoint.
package main
