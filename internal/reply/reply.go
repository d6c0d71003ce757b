package reply

import (
	"encoding/json"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// oneLine makes a description fit a header value, which must stay on one line.
var oneLine = strings.NewReplacer("\r", " ", "\n", " ")

// Error answers req with a micro error: code (e.g. "503") and description (on one line) in
// the headers, and a JSON body {"error":description}.
func Error(req micro.Request, code, description string) error {
	m := Msg("", code, description)
	return req.Error(code, m.Header.Get(micro.ErrorHeader), m.Data)
}

// Msg is the same error as a message to publish on subject: for a request answered after
// its handler has returned (on the request's reply subject), or forwarded between services.
func Msg(subject, code, description string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Header.Set(micro.ErrorCodeHeader, code)
	m.Header.Set(micro.ErrorHeader, oneLine.Replace(description))
	m.Data, _ = json.Marshal(messages.ErrorBody{Error: description}) // a struct of one string always encodes
	return m
}
