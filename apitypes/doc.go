// Package apitypes is the JSON contract shared by a Strata node and those
// who talk to it: the bodies of the operator API (docs/api.md) and the
// payloads of the device protocol (docs/mqtt.md) that more than one
// program encodes or decodes — error answers and their codes, enrollment,
// commands and their results, jobs, and federation peers.
//
// The node, its Go client (node/client), strata-agent and the device
// simulator all use these types, so each shape is defined once. Field
// names, omitempty and omitzero are contracts: a change to a shape shows
// in this package's golden tests and must be deliberate.
//
// The package imports nothing but the standard library (a test in
// tests/layout holds it to that), so that the agent can link it without
// linking the node. Types carry data only; validation of outside input
// stays with the program that reads it.
package apitypes
