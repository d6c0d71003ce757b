// Package reply answers requests with an error in the form every Cairn endpoint uses:
// micro's error headers (the description on one line) and a JSON body
// {"error": description}. Error answers a micro request in its handler; Msg is the same
// error as a message, for a reply published after the handler has returned.
package reply
