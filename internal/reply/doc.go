// Package reply answers micro requests with an error in the form every Cairn endpoint uses:
// micro's error headers and a JSON body {"error": description}.
package reply
