package cli

import (
	"io"
	"strings"

	"github.com/sirupsen/logrus"
)

// RouteLibraryLogs sends the warnings that libraries log through logrus
// (compose-go does, e.g. about `yes` as a boolean) to w, worded as the
// CLI's own warnings, and drops their debug and info chatter. It changes
// logrus's process-wide logger, so only a main package should call it.
func RouteLibraryLogs(w io.Writer) {
	logrus.SetOutput(w)
	logrus.SetLevel(logrus.WarnLevel)
	logrus.SetFormatter(warningFormatter{})
}

// warningFormatter writes a logrus entry as "WARNING: message".
type warningFormatter struct{}

// Format implements logrus.Formatter.
func (warningFormatter) Format(e *logrus.Entry) ([]byte, error) {
	// compose-go tells users to remove `version:`, but skiff, like docker
	// stack deploy, takes versioned files as they are (2.x and 3.x).
	if strings.Contains(e.Message, "the attribute `version` is obsolete") {
		return nil, nil
	}
	prefix := "WARNING: "
	if e.Level <= logrus.ErrorLevel {
		prefix = "ERROR: "
	}
	return []byte(prefix + e.Message + "\n"), nil
}
