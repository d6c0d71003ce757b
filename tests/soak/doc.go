// Package soak runs `cairn dev --rate 200` with the checkpoint interval at 100 ms for a
// long time and prints, per minute, the dev process's CPU share and RSS, the checkpoints
// completed and aborted and the message count of every stream and bucket (docs/soak.md).
// It runs only with CAIRN_SOAK=1, never in CI:
//
//	CAIRN_SOAK=1 CAIRN_SOAK_MINUTES=30 go test -count=1 -timeout 40m -run TestSoak -v ./tests/soak/
package soak
