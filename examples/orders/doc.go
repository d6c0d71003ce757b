// Command orders is an operator of your own under Cairn: the count and amount of the
// orders per region, read from stream ORDERS, subjects orders.eu.> and orders.us.>, and
// served on cairn.op.orders.<instance>.totals. main.go is the program of
// docs/operator-guide.md, block by block (TestGuideIsTheExample keeps them equal, and
// TestGuideOperatorSurvivesSIGKILLUnderLoad builds the guide's blocks in a module of
// their own). Run it with
//
//	NATS_URL=nats://localhost:4222 INSTANCE=orders-0 go run ./examples/orders
package main
