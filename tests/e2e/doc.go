// Package e2e holds the end-to-end tests of the compose stacks: they build the images, bring
// compose.yaml (one NATS server) and compose.cluster.yaml (a 3-node JetStream cluster) up
// through the Makefile, and drive Cairn with the stock nats CLI only, as a user would.
//
// The tests carry the build tag e2e, so `go test ./...` never starts Docker:
//
//	go test -tags e2e -count=1 -timeout 15m ./tests/e2e/
//
// They skip, saying why, when no Docker engine answers `docker info` or docker-compose is
// missing. The stacks use their own compose project names and free 127.0.0.1 ports, so they
// do not disturb a stack started with `make up`.
package e2e
