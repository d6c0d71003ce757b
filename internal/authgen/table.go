package authgen

import (
	"fmt"
	"io"
	"strings"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
)

// Table markers: docs/security.md holds WriteTable's output between them, and a test
// checks that it is the output of this build.
const (
	TableBegin = "<!-- cairn auth --table: begin (generated; do not edit) -->"
	TableEnd   = "<!-- cairn auth --table: end -->"
)

// tableNames are how the placeholders of rule subjects read in the table.
var tableNames = strings.NewReplacer(
	"{p}", cairnjs.DefaultPrefix,
	"{job}", "<job>",
	"{instance}", "<instance>",
	"{shared}", "<shared>",
	"{input}", "<input stream>",
	"{output}", "<output stream>",
	"{in}", "<input subject>",
	"{out}", "<output subject>",
	"{store}", cairnjs.ObjectStream(cairnjs.SnapshotStore("<job>")),
	"{legacy}", cairnjs.ObjectStream(cairnjs.SnapshotBucket),
	"|", "\\|",
)

// inboxNames are each role's {inbox}, as the table shows it.
var inboxNames = map[role]string{
	roleConfigsvc:   "_INBOX.configsvc.<name>",
	roleCoordinator: "_INBOX.coord.<name>",
	roleOperator:    "_INBOX.op.<job>.<instance>",
	roleLoadgen:     "_INBOX.loadgen.<name>",
}

// roleTitles introduce each role's table.
var roleTitles = map[role]string{
	roleAdmin:       "admin: a person with the nats CLI, one user each",
	roleConfigsvc:   "configsvc: one user per replica, every job",
	roleCoordinator: "coordinator: one user per replica, for its jobs (every job of the spec unless it lists some); each rule with `<job>` is granted once per job",
	roleOperator:    "operator: one user per instance `<instance>` of job `<job>`",
	roleLoadgen:     "loadgen: one user per load generator, for the input of every instance of its jobs",
}

// WriteTable writes the rules as Markdown, one table per role, between TableBegin and
// TableEnd: who may publish or subscribe to what, and why.
func WriteTable(w io.Writer) error {
	var b strings.Builder
	b.WriteString(TableBegin + "\n")
	fmt.Fprintf(&b, "`<shared>` is each of %s. `API.` stands for `$JS.API.`. ", "`"+strings.Join(sharedStreams(), "`, `")+"`")
	b.WriteString("Rules marked *migration* are generated only with `legacy_snapshots` or `legacy_acks` in the spec.\n")
	for _, r := range roles {
		fmt.Fprintf(&b, "\n#### %s\n\n", roleTitles[r])
		b.WriteString("| may | subject | why |\n|---|---|---|\n")
		for _, k := range []kind{publish, denyPublish, subscribe} {
			for _, ru := range rules {
				if ru.role != r || ru.kind != k {
					continue
				}
				writeRow(&b, r, ru)
			}
		}
		if serviceRoles[r] {
			b.WriteString("| reply | (`allow_responses`) | one reply to each request received, to its reply subject only |\n")
		}
	}
	b.WriteString(TableEnd + "\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// writeRow writes rule ru of role r as a table row.
func writeRow(b *strings.Builder, r role, ru rule) {
	subject := strings.ReplaceAll(tableNames.Replace(ru.subject), "{inbox}", inboxNames[r])
	subject = strings.Replace(subject, api, "API.", 1)
	why := ru.why
	if ru.legacy != always {
		why = "*migration*: " + strings.TrimPrefix(why, "migration: ")
	}
	fmt.Fprintf(b, "| %s | `%s` | %s |\n", kindNames[ru.kind], subject, strings.ReplaceAll(why, "|", "\\|"))
}

var kindNames = map[kind]string{publish: "publish", denyPublish: "**not** publish", subscribe: "subscribe"}
