"""Every finding code in one registry: default severity, title, meaning, detection and advice.

The codes are an interface (scripts rely on them); docs/findings.md is generated
from this module and a test fails when they differ::

    python -m dicomtrace.findings.codes --markdown > docs/findings.md

Adding a finding: add a `FindingCode` to `CODES` (in its area), regenerate the
document, and raise it with ``Finding(code, severity, ...)`` (`default_severity`
gives the usual severity). Codes that decoders emit as `Violation` /
`ProtocolIssue` (ul/, dimse/) are findings too and are registered here.
"""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass

SEVERITIES = ("error", "warning", "note")


@dataclass(frozen=True, slots=True)
class FindingCode:
    code: str
    severity: str  # the default (most usual) severity
    area: str  # the section of docs/findings.md
    title: str  # a few words
    means: str  # what it means
    detected: str = ""  # how dicomtrace sees it
    advice: str = ""  # what to check or change
    severity_note: str = ""  # when another severity is used, e.g. "warning when nothing was in flight"


AREAS = {
    "association": ("Association", ""),
    "operation": ("Operations", ""),
    "query": ("C-FIND", ""),
    "retrieve": ("C-MOVE and C-GET",
                 "A C-MOVE is linked to the sub-association(s) its SCP opened back to the move "
                 "destination (calling AE = the SCP's AE, called AE = the move destination, during "
                 "the C-MOVE; or C-STOREs carrying its Move Originator Message ID and AE Title): "
                 "see `sub_associations` in the JSON. A C-GET's C-STORE sub-operations run on the "
                 "same association (`sub_operations`)."),
    "conformance": ("Protocol conformance (PS3.8, PS3.7)",
                    "They come from the decoders, which never stop at bad bytes: they record what "
                    "was wrong and resynchronise at the next plausible PDU header. One finding per "
                    "code and association, with the count and the first frames."),
    "network": ("Network",
                "Network findings are raised only where they touched DICOM: on the connection of "
                "an association, and tied to the operations they overlapped. On a clean capture "
                "there is no warning and no error."),
    "tls": ("TLS (DICOM secure transport)",
            "From the TLS handshake, which is readable without keys up to the ServerHello (and, "
            "in TLS 1.2, the certificates); with `--tls-keylog` the rest too. See docs/tls.md."),
}

_C = FindingCode
CODES: tuple[FindingCode, ...] = (
    # -- association (PS3.8 7.1-7.3, 9.3.4) --
    _C("association-rejected", "error", "association", "association rejected",
       "the acceptor answered the A-ASSOCIATE-RQ with A-ASSOCIATE-RJ.",
       "an A-ASSOCIATE-RJ PDU; result (permanent/transient), source and reason are given in "
       "words (PS3.8 table 9-21).",
       "by reason: *called-AE-title-not-recognized*: the acceptor does not answer to that AE "
       "title; compare spelling, case and spaces with the acceptor's own AE title. "
       "*calling-AE-title-not-recognized*: the acceptor does not know the sender; add the "
       "calling AE title with its IP address to the acceptor's list of known AEs. "
       "*no-reason-given*: the acceptor's log says why (unknown AE or IP, licence, SOP class). "
       "*application-context-name-not-supported*, *protocol-version-not-supported*: a "
       "nonconforming requestor. *temporary-congestion*: retry later; check the acceptor's "
       "association limit. *local-limit-exceeded*: the acceptor's limit of simultaneous "
       "connections (often a licence) is reached; look for clients that leave associations open."),
    _C("presentation-context-rejected", "warning", "association",
       "presentation contexts rejected",
       "the acceptor rejected some presentation contexts.",
       "A-ASSOCIATE-AC results 1-4 (PS3.8 table 9-18). A warning when a SOP class ended up "
       "with no accepted context (or a rejected context was used); a note when each rejected "
       "SOP class was accepted in another context anyway.",
       "*abstract-syntax-not-supported*: configure the SOP class on the acceptor (or do not "
       "send such objects there). *transfer-syntaxes-not-supported*: a compression mismatch; "
       "enable the syntax on the acceptor or send uncompressed.",
       "note when each rejected SOP class was accepted in another context"),
    _C("no-accepted-presentation-context", "error", "association",
       "no presentation context accepted",
       "every context was rejected; nothing can be exchanged.",
       "an A-ASSOCIATE-AC that accepts none of the proposed contexts.",
       "enable at least one proposed SOP class / transfer syntax pair on the acceptor; see the "
       "negotiation table."),
    _C("association-aborted", "error", "association", "association aborted",
       "A-ABORT ended the association.",
       "an A-ABORT PDU; source (service user / provider), reason (PS3.8 table 9-26), which side "
       "sent it, and the operations that were in flight. When the requestor aborts right after "
       "an A-ASSOCIATE-AC that rejected a presentation context it needed (no accepted "
       "alternative, no request sent), that rejection is named as the likely cause and the "
       "abort is linked to it.",
       "a provider abort points at a protocol error (see the conformance findings); a "
       "requestor's user abort is usually a timeout or cancel on the sending side, or a "
       "context it needed was rejected; an acceptor's user abort is the receiver giving up "
       "(storage error, limit).",
       "warning when nothing was in flight"),
    _C("connection-closed-without-release", "error", "association",
       "connection closed without release",
       "the TCP connection ended (RST or FIN) with no A-RELEASE and no A-ABORT.",
       "association outcome `reset`.",
       "look for a crash or restart, an idle timeout, or a firewall / load balancer cutting "
       "connections.",
       "warning when nothing was in flight"),
    _C("association-incomplete", "note", "association", "capture ended during the association",
       "the capture ended while the association was open.", "",
       "capture longer."),
    _C("capture-starts-midstream", "note", "association", "capture starts mid-association",
       "the capture began after the association was negotiated.",
       "the first bytes of a direction were not the start of the TCP stream. Command sets are "
       "still decoded (they need no negotiation); the transfer syntax of data sets is inferred "
       "from their bytes and marked as inferred; AE titles, presentation contexts and PDU limits "
       "are unknown.",
       "start capturing before the association opens."),
    _C("ae-title-anomaly", "warning", "association", "unusual AE title",
       "an AE title that products often disagree on.",
       "in the A-ASSOCIATE-RQ: empty or all spaces, non-ASCII bytes, control characters or "
       "backslash, leading spaces (warning); NUL padding, embedded spaces, lower case (note).",
       "configure exactly the same title on both sides.",
       "note for NUL padding, embedded spaces, lower case"),
    # -- operations (PS3.7, PS3.4) --
    _C("dimse-failure", "error", "operation", "operation failed",
       "an operation's final status was a failure.",
       "the final response's status, worded from the table of the service the request's SOP "
       "class belongs to (PS3.7 annex C and PS3.4: storage, Q/R find, move, get, worklist, "
       "MPPS, storage commitment, print, ...), with Error Comment and Offending Element. One "
       "finding per association, service and status code.",
       "by status, e.g. 0xA700 out of resources: disk or database full on the receiver; "
       "0xA900 data set does not match SOP class: validate the object; 0xC000 cannot "
       "understand: the receiver could not parse it; 0x0122 SOP class not supported: "
       "configure it."),
    _C("dimse-warning", "warning", "operation", "operation completed with a warning",
       "an operation's final status was a warning.",
       "as for `dimse-failure`.",
       "e.g. 0xB000 (storage) coercion of data elements: usually harmless, the receiver "
       "changed values."),
    _C("dimse-cancelled", "note", "operation", "operation cancelled",
       "an operation ended with status Cancel (0xFE00) after a C-CANCEL.",
       "as for `dimse-failure`.", ""),
    _C("request-unanswered", "error", "operation", "request unanswered",
       "a request got no final response before release, abort, the connection's end or the "
       "capture's end.",
       "a request without final response. When the request's own data set never fully reached "
       "the responder, a separate finding says so and does not blame the responder (it is "
       "linked to `object-incomplete`).",
       "the responder hung, crashed or was slower than the requestor's timeout.",
       "warning when the capture ended, or when the request's data set never arrived whole"),
    _C("response-without-request", "warning", "operation", "response without request",
       "a response whose Message ID Being Responded To matches no request.", "",
       "mid-stream capture: the request was sent before the capture began. Otherwise a "
       "nonconforming responder, or the request's bytes were lost from the capture.",
       "note for mid-stream captures"),
    _C("message-id-reused", "warning", "operation", "Message ID reused",
       "a request reused the Message ID of a request still outstanding (PS3.7 9.1.1.1).", "",
       "a Message ID must be unique among the requests outstanding on an association; a reused "
       "ID makes responses ambiguous. A fix in the sender is needed."),
    _C("context-misuse", "error", "operation", "presentation context misused",
       "a request on a presentation context that was rejected or never negotiated, or whose "
       "SOP class (in the command, or in a C-STORE data set) is not the context's.", "",
       "the receiver will refuse or misinterpret it; the sender must pick the context "
       "negotiated for the SOP class (and transfer syntax) it sends."),
    _C("slow-response", "warning", "operation", "slow response",
       "a response came far later than the others of its kind on the association.",
       "per service (C-MOVE and C-GET excluded, their time depends on the sub-operations), with "
       "at least three answered requests: response delay (end of the request to the final "
       "response) above 1 s and above ten times (and 1 s more than) the median; the message "
       "says how far.",
       "the responder was busy (database, disk, a synchronous step)."),
    _C("object-incomplete", "warning", "operation", "object incomplete in the capture",
       "C-STORE data sets that this capture does not hold whole: bytes never captured, a "
       "capture that began or ended mid-transfer, or a transfer cut off by an abort or reset.",
       "the request's data set never reached its last fragment, or some of its bytes are "
       "missing. `dicomtrace export` writes these with a `.partial` suffix.",
       "if only the capture missed bytes (see `tcp-data-missing`), the receiver may still have "
       "the object; otherwise resend it."),
    _C("dataset-problem", "warning", "operation", "data set does not decode cleanly",
       "a data set whose bytes do not follow the negotiated transfer syntax or the rules of "
       "its VRs (PS3.5 6.2, 7.1): explicit VR where implicit was negotiated (or the reverse), "
       "a value invalid for its VR such as a UID with characters other than digits and dots, "
       "or an element that cannot be decoded.",
       "what pydicom reports while reading the start of each data set (identifiers, and the "
       "patient, study and series attributes of C-STOREs); the message lists the problems and "
       "the messages concerned. These reports never reach standard error as Python warnings.",
       "strict receivers refuse such data sets (0xA900, 0xC000) or store wrong values: fix "
       "the sending application's encoding, and validate the object (e.g. dciodvfy)."),
    # -- C-FIND (PS3.4 C.2.2, C.4.1) --
    _C("cfind-no-matches", "note", "query", "C-FIND found nothing",
       "a C-FIND ended successfully with no match; the query's keys are listed.", "",
       "check the values for spelling, case, spaces and wildcards (see `cfind-key-mismatch`), "
       "the Query/Retrieve Level, and whether the data is on this SCP at all."),
    _C("cfind-key-mismatch", "note", "query", "C-FIND keys or values differ",
       "the responses do not fit the query's keys, or a key's value explains a miss.",
       "comparing the request identifier with the responses: keys asked that no response "
       "returned, keys returned that were not asked for (beyond those an SCP adds, such as "
       "Retrieve AE Title), a returned value that differs from the asked one only in case or "
       "spaces, and a different Specific Character Set (unless the request has no (0008,0005) "
       "and only ASCII values: then nothing can differ). When nothing matched: values "
       "with leading/trailing spaces, wildcards in UIDs, dates, times or numbers, dates that "
       "are not YYYYMMDD or a DICOM range, person names with spaces or commas instead of `^`, "
       "lower case.",
       "correct the query, or the SCP's supported keys.",
       "warning when it explains zero matches"),
    # -- C-MOVE and C-GET (PS3.4 C.4.2, C.4.3) --
    _C("move-destination-unknown", "error", "retrieve", "move destination unknown",
       "status 0xA801: the Q/R SCP has no address for the destination AE.", "",
       "add the AE title, IP address and port to the SCP's destinations."),
    _C("move-destination-unreachable", "error", "retrieve", "move destination unreachable",
       "the C-MOVE needed sub-operations but no sub-association was seen.",
       "no linked sub-association while the responses count sub-operations or the C-MOVE "
       "failed; the TCP connections the SCP's host opened meanwhile tell what happened: SYN "
       "never answered (firewall, wrong address), reset (wrong port, nothing listening), or no "
       "attempt at all (then capture at the destination or the SCP). It is the root cause: "
       "the C-MOVE's failure status, an unanswered C-MOVE and failed sub-operation counts "
       "are linked to it as consequences.",
       "check the address and port the Q/R SCP has configured for the destination AE."),
    _C("move-suboperation-failed", "error", "retrieve", "sub-operations failed",
       "the sub-association was rejected, aborted or reset, C-STORE sub-operations failed, or "
       "the final response counts failed sub-operations.", "",
       "see the findings of the sub-association (rejection: the destination does not know the "
       "SCP's AE title or lacks the SOP class; failures: the destination's storage status)."),
    _C("move-suboperation-count-mismatch", "warning", "retrieve", "sub-operation counts differ",
       "the completed + warning counts of the final response differ from the successful "
       "C-STOREs seen.", "",
       "either the capture missed some C-STOREs (another interface or path), or the SCP's "
       "counts are wrong; compare with what the destination received."),
    _C("move-final-before-suboperations", "error", "retrieve",
       "final response before the sub-operations",
       "the final C-MOVE/C-GET response arrived before its C-STOREs finished: a nonconforming "
       "SCP (PS3.4 C.4.2.3); clients that release on it lose objects.", "",
       "report it to the SCP's vendor."),
    # -- conformance (PS3.8 9, PS3.7) --
    _C("malformed-pdu", "error", "conformance", "malformed PDU",
       "a PDU or item does not follow PS3.8 9.3 (lengths that do not fit, unknown item types, "
       "reserved values, a command set that cannot be decoded).",
       "the decoders; the message gives the stream byte offset and what was wrong.",
       "a peer that sends it is nonconforming (report it to its vendor); the receiving side "
       "may abort or misread the message."),
    _C("pdu-exceeds-max-length", "warning", "conformance", "PDU longer than announced maximum",
       "a P-DATA-TF longer than the maximum length the receiver announced (PS3.8 D.1).", "",
       "strict receivers abort: fix the sender, or raise the receiver's maximum PDU size."),
    _C("invalid-presentation-context-id", "warning", "conformance",
       "invalid presentation context ID",
       "an even presentation context ID, a duplicate, or one answered but never proposed "
       "(PS3.8 9.3.2.2).", "",
       "IDs must be odd numbers from 1 to 255 and match a negotiated context; strict peers "
       "reject or abort. A vendor fix is needed."),
    _C("invalid-pdv-flags", "warning", "conformance", "invalid PDV flags",
       "reserved bits set in a PDV's message control header (PS3.8 E.2).", "",
       "only bits 0 (command/data) and 1 (last fragment) may be set; strict peers abort."),
    _C("unexpected-pdu", "error", "conformance", "PDU not allowed in this state",
       "a PDU the association's state does not allow (PS3.8 table 9-10): P-DATA before "
       "A-ASSOCIATE-AC or after release, A-RELEASE-RP with no request, a second "
       "A-ASSOCIATE-RQ.", "",
       "the peers disagree about the association's state: look at both sides' logs and "
       "timeouts."),
    _C("unknown-command-field", "warning", "conformance", "undefined Command Field",
       "a command set whose Command Field (0000,0100) PS3.7 does not define (annex E); the "
       "JSON has `command: null` and the raw `command_field`.", "",
       "a nonconforming or proprietary sender; receivers refuse such a message (0x0211 "
       "unrecognized operation). Report it to the sender's vendor."),
    # -- network --
    _C("tcp-retransmissions", "warning", "network", "TCP retransmissions",
       "segments were sent again: packet loss on the path.",
       "segments Wireshark would mark `tcp.analysis.retransmission` on the association's "
       "connection (its rules, frame by frame; see docs/architecture.md); a warning from 1 % "
       "of the packets or 10 segments. The operations in "
       "progress when they happened are named. Spurious retransmissions (data the receiver "
       "had already acknowledged: D-SACK, tail-loss probes) are counted, as tshark does, but "
       "not called loss.",
       "packet loss on the path: congestion, duplex mismatch, bad cabling.",
       "note when few, or when all were spurious"),
    _C("tcp-data-missing", "error", "network", "bytes never captured",
       "bytes the receiver acknowledged that the capture does not contain, or frames cut by "
       "the snap length.",
       "Data sets hit are incomplete (and exports are marked partial).",
       "usually the capture dropped packets, not the network: bigger buffer (`-B`), a filter, "
       "`-s 0`, capture on the host.",
       "warning when no data set was hit"),
    _C("tcp-zero-window", "warning", "network", "receiver stalled the sender (zero window)",
       "a receiver advertised a zero TCP window and the sender had to wait.",
       "a side advertised a zero receive window for at least 0.2 s and 10 % of the "
       "connection's duration (brief zero windows are normal on fast links). The operations "
       "in progress at the zero-window advertisements are named: those it slowed; the "
       "association is then receiver-limited too.",
       "that side's application was slow to read: storage or CPU."),
    _C("tcp-delayed-ack-stall", "note", "network", "Nagle / delayed-ACK stall",
       "a sender sent a small segment (typically a PDU or PDV header) and then waited for the "
       "peer's ACK before sending the rest of the message: Nagle's algorithm on the sender "
       "holding back data while the receiver delays its ACK (40-200 ms each time).",
       "a segment of at most 64 bytes that does not complete a PDU, then nothing from that "
       "side until the peer's pure ACK of it at least 20 ms later, after which the rest of "
       "the message follows at once. Says who stalls (the sender with Nagle on; the receiver "
       "delaying ACKs), how often, and the time it cost in total.",
       "set TCP_NODELAY on the sending implementation (dcmtk 3.6.7 leaves Nagle on unless "
       "the environment sets `TCP_NODELAY=1`), or check the vendor's network settings; "
       "disabling delayed ACKs on the receiver also helps.",
       "warning when it cost at least a tenth of the association's time and 0.5 s in total"),
    _C("tcp-reset", "error", "network", "TCP reset",
       "a TCP reset ended the association (not a reset after a completed release).", "",
       "a crash, a hard timeout, or a firewall injecting resets."),
    _C("connection-refused", "error", "network", "connection refused",
       "a TCP connection to a DICOM server address and port never carried a PDU: the "
       "destination answered the SYN with a reset.",
       "connections to a configured port (`--port`), or to an address and port that the "
       "capture shows to be DICOM (an association found there by the heuristic), that began "
       "with a SYN, carried no payload, and got a "
       "reset (no SYN/ACK). One finding per client, server and port, with the number of "
       "attempts. Such connections are not listed as associations.",
       "nothing listens on that address and port (service stopped, wrong port on the sender, "
       "a firewall rejecting)."),
    _C("connection-unanswered", "error", "network", "connection unanswered",
       "a TCP connection to a DICOM server address and port never got an answer to its SYN.",
       "as for `connection-refused`, but no packet came back.",
       "wrong IP address, host down, or a firewall dropping the traffic."),
    _C("capture-drops", "warning", "network", "the capture dropped packets",
       "the capture itself lost packets: the kernel's buffer overflowed, or the interface "
       "dropped them, before they reached the capture file.",
       "`live`: the counters libpcap keeps (`pcap_stats`, as tcpdump prints them on exit): "
       "packets dropped by the kernel and by the interface.",
       "missing bytes and retransmissions seen in such a capture may be the capture's, not the "
       "network's. Capture with a narrower filter (the DICOM port and peer), a larger buffer "
       "or snap length limit, on a less loaded machine, or write to a faster disk."),
    _C("idle-gap", "warning", "network", "silence inside an operation",
       "no data either way for 2 s or more while an operation was in progress.",
       "a data set half sent, or a response awaited; C-MOVE waits excluded, their "
       "sub-operations run elsewhere. Says what was awaited and whether the silence ended "
       "with a retransmission (loss and a retransmission timeout).",
       "the side waited for was busy or stalled (see its log at that time), or packets were "
       "lost and waited for a retransmission timeout (see `tcp-retransmissions`)."),
    # -- TLS (RFC 8446, RFC 5246, BCP 195 / RFC 9325, PS3.15 B.9-B.11) --
    _C("tls-handshake-failed", "error", "tls", "TLS handshake failed",
       "a TLS connection ended before its handshake completed, so no DICOM was exchanged.",
       "a fatal alert (named as RFC 8446 spells it, with who sent it), or the connection closing "
       "during the handshake. The likely cause is worked out from the alert and the handshake: "
       "no common version or cipher suite (compared with what the client offered), a certificate "
       "from a CA the peer does not trust, a certificate expired or not yet valid at the time of "
       "the capture, a name (SNI) that is not among the certificate's names, a client certificate "
       "required but not sent. In TLS 1.3 without keys the alert itself is encrypted: a record of "
       "an alert's size is reported as a probable alert.",
       "*unknown_ca* / *bad_certificate*: give the peer the CA certificate that issued the other "
       "side's certificate (dcmtk `+cf`). *certificate_expired*: renew the certificate. "
       "*handshake_failure* / *insufficient_security* before a ServerHello: align the TLS "
       "profiles (versions, cipher suites; PS3.15 BCP 195 profiles). *certificate_required*, or "
       "*handshake_failure* after a certificate request: configure a client certificate on the "
       "requestor, or stop requiring one."),
    _C("tls-certificate-expiring", "warning", "tls", "certificate expires soon",
       "a certificate sent in the handshake expires within 30 days of the capture, or had "
       "expired already.",
       "the validity (not after) of every certificate of both chains, against the capture's time.",
       "renew the certificate before it expires and install it (and its chain) on the peer.",
       "error when already expired"),
    _C("tls-weak-protocol", "warning", "tls", "weak TLS version or cipher suite",
       "the connection negotiated a TLS version below 1.2, or a cipher suite that BCP 195 "
       "(RFC 9325), which DICOM's secure transport profiles follow, excludes.",
       "a warning for TLS 1.1 and older, and for NULL, RC4, DES, 3DES, export and anonymous "
       "suites (RFC 9325 4.1 forbids them); a note for static RSA key exchange and CBC-mode "
       "suites, which RFC 9325 4.2 does not recommend and the Extended BCP 195 profile "
       "(PS3.15 B.11) excludes.",
       "enable TLS 1.2 or 1.3 with ECDHE and AES-GCM (or ChaCha20-Poly1305) on both peers "
       "(dcmtk: `+py` or `+pz`)."),
    _C("tls-plaintext-on-tls-port", "error", "tls", "plain DICOM sent to a TLS port",
       "a client sent unencrypted DICOM (an A-ASSOCIATE-RQ) to a DICOM-over-TLS port (2762 or "
       "`--tls-port`).",
       "the first bytes of the client's stream are a PDU, not a TLS record; a server that "
       "answered with a TLS alert is named.",
       "enable TLS on the requestor (dcmtk `+tls`), or send to the acceptor's plain DICOM port."),
    _C("tls-on-plaintext-port", "error", "tls", "TLS sent to a plain DICOM port",
       "a client began a TLS handshake, but the server does not speak TLS on that port: it "
       "answered with something that is not a TLS record (often an A-ABORT or A-ASSOCIATE-RJ) "
       "or closed without answering.",
       "a ClientHello at the start of the client's stream; the server's first bytes are not a "
       "TLS record, or the server closed the connection with no answer at all.",
       "disable TLS on the requestor for this destination, or enable TLS on the acceptor (or "
       "send to its TLS port, often 2762)."),
    _C("tls-not-decrypted", "note", "tls", "TLS connection not decrypted",
       "a key log was given (`--tls-keylog`), but it has no usable secrets for this connection, "
       "so the DICOM inside is not analysed.",
       "said once per connection: its client random is not in the key log, the TLS 1.3 "
       "handshake secrets are missing, the cipher suite is one dicomtrace does not decrypt, or "
       "the capture began after the handshake.",
       "write the key log on the side that made this connection (SSLKEYLOGFILE, Python ssl "
       "`keylog_filename`) while it is captured; see docs/tls.md."),
)
del _C

REGISTRY: dict[str, FindingCode] = {c.code: c for c in CODES}


def lookup(code: str) -> FindingCode:
    """The registry entry of a code (KeyError for a code nobody registered)."""
    return REGISTRY[code]


def default_severity(code: str) -> str:
    return REGISTRY[code].severity


def advice(code: str) -> str:
    """The registered advice, as a sentence."""
    text = REGISTRY[code].advice
    return text[:1].upper() + text[1:] if text else ""


INTRO = """\
# Findings

<!-- Generated by `python -m dicomtrace.findings.codes --markdown > docs/findings.md`
     from dicomtrace/findings/codes.py; edit that file, not this one. -->

`dicomtrace analyze` lists findings first: root causes most severe first, each with
the findings it caused indented under it; the JSON `findings` list carries the same
order. Every finding has a stable `code`, a `severity` (`error`:
something failed; `warning`: something is wrong or slowed things down; `note`:
worth knowing), the `association` and `frames` that show it, a `message` in plain
words and a `hint`: likely causes and what to check. The codes below are an
interface: scripts may rely on them.

In the JSON each finding has an `id` (unique within the analysis); a consequence has
`caused_by`, the `id` of its root cause (null for a root). Linked today: a C-MOVE
whose destination is unreachable and its failure status, unanswered request and
sub-operation counts; a requestor's abort after a rejected presentation context; a TCP
reset and the association's end without release; an object cut off by an abort,
reset or missing capture bytes; a request unanswered because its data set never
arrived whole. A consequence's hint points at its root instead of advice of its own.
"""


def _para(text: str) -> str:
    return textwrap.fill(text, width=88, break_on_hyphens=False, break_long_words=False)


def markdown() -> str:
    """docs/findings.md, from the registry."""
    out = [INTRO]
    for area, (heading, text) in AREAS.items():
        out.append(f"## {heading}\n")
        if text:
            out.append(_para(text) + "\n")
        for c in CODES:
            if c.area != area:
                continue
            sev = c.severity + (f"; {c.severity_note}" if c.severity_note else "")
            out.append(f"### `{c.code}` ({sev})\n")
            lines = [f"**{c.title[:1].upper() + c.title[1:]}.** "
                     f"{c.means[:1].upper() + c.means[1:]}"]
            if c.detected:
                lines.append(f"**Detected:** {c.detected}")
            if c.advice:
                lines.append(f"**What to do:** {c.advice}")
            out.append("\n\n".join(_para(x) for x in lines) + "\n")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--markdown"]:
        sys.stdout.write(markdown())
        return 0
    if argv == ["--list"]:
        for c in CODES:
            print(f"{c.code}\t{c.severity}\t{c.title}")
        return 0
    print("usage: python -m dicomtrace.findings.codes --markdown | --list", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
