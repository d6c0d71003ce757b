package reply

// Codes of error replies (micro's Nats-Service-Error-Code header), the same in every
// Cairn service.
const (
	BadRequest  = "400"
	NotFound    = "404"
	Conflict    = "409"
	Internal    = "500"
	Unavailable = "503"
)

// Coded is an error reply: its code and a description saying what was wrong.
type Coded struct {
	Code, Description string
}

// Error returns the description.
func (c *Coded) Error() string { return c.Description }

// New returns the error reply of code with description.
func New(code, description string) *Coded { return &Coded{Code: code, Description: description} }
