package reply

import (
	"encoding/json"

	"github.com/nats-io/nats.go/micro"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// Error answers req with a micro error: code (e.g. "503") and description in the headers
// and a JSON body {"error":description}.
func Error(req micro.Request, code, description string) error {
	body, err := json.Marshal(messages.ErrorBody{Error: description})
	if err != nil {
		return err
	}
	return req.Error(code, description, body)
}
