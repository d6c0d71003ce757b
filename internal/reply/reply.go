package reply

import (
	"encoding/json"
	"strings"

	"github.com/nats-io/nats.go/micro"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// oneLine makes a description fit a header value, which must stay on one line.
var oneLine = strings.NewReplacer("\r", " ", "\n", " ")

// Error answers req with a micro error: code (e.g. "503") and description (on one line) in
// the headers, and a JSON body {"error":description}.
func Error(req micro.Request, code, description string) error {
	body, err := json.Marshal(messages.ErrorBody{Error: description})
	if err != nil {
		return err
	}
	return req.Error(code, oneLine.Replace(description), body)
}
