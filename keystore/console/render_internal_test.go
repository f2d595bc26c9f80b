package console

import (
	"testing"

	"github.com/keygate/keygate/keystore/client"
)

func TestSentence(t *testing.T) {
	for in, want := range map[string]string{
		"starting_after must be an event ID": "starting_after must be an event ID.",
		"name is required":                   "Name is required.",
		"élan is not a field.":               "Élan is not a field.",
		"ünïcode":                            "Ünïcode.",
		"metadata.owner must be a string":    "metadata.owner must be a string.",
		"":                                   "The admin API refused the call.",
	} {
		if got := sentence(&client.APIError{LongMessage: in}); got != want {
			t.Errorf("sentence(%q) = %q, want %q", in, got, want)
		}
	}
	if got := sentence(&client.APIError{Message: "not found"}); got != "Not found." {
		t.Errorf("from Message: %q", got)
	}
}
