"""Active checks and the test SCP (pynetdicom): echo, store, listen, monitor.

Each check makes real associations, tells the negotiation in words (PS3.8 9.3) and
explains a failure as a finding with the same code and advice the capture analysis
uses (docs/findings.md).
"""

# Exit codes of echo, store and monitor (README "Exit codes of the active checks").
EXIT_OK = 0  # the check succeeded
EXIT_DICOM_FAILURE = 1  # reached the peer, but it rejected, aborted or answered with a failure
EXIT_USAGE = 2  # wrong command line or unreadable input file
EXIT_UNREACHABLE = 3  # no association: connection refused, unanswered, or no A-ASSOCIATE answer
EXIT_INTERRUPTED = 130
