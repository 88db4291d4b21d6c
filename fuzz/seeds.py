#!/usr/bin/env python3
"""Writes the committed seed inputs (fuzz/seeds/TARGET/) and, with --corpus DIR, adds a sample of
../shared/corpus to the working corpora (fuzz/corpus/TARGET/, not committed: the shared corpus
is never copied into the repository)."""
import os, struct, sys, random, pathlib

here = pathlib.Path(__file__).resolve().parent
root = here.parent

def put(kind, target, name, data):
    d = here / kind / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)

MSG = (b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: hi\r\n"
       b"Message-ID: <1@example.test>\r\nMIME-Version: 1.0\r\n"
       b"Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
       b"Hello, see http://www.example.test/x\r\n..dot line\r\n--b\r\nContent-Type: text/html\r\n\r\n"
       b"<p>Hello <a href=\"http://evil.example/\">here</a></p>\r\n--b--\r\n")

def committed():
    for i, line in enumerate([b"EHLO client.example", b"HELO x", b"MAIL FROM:<a@example.test> SIZE=100 BODY=8BITMIME",
                              b"MAIL FROM:<> SMTPUTF8", b"RCPT TO:<b@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.test",
                              b"RCPT TO:<postmaster>", b"DATA", b"BDAT 100 LAST", b"BDAT 0", b"RSET", b"NOOP x", b"QUIT",
                              b"STARTTLS", b"VRFY a", b"AUTH PLAIN AGFhAGI=", b"XCLIENT ADDR=192.0.2.1", b"MAIL FROM:<\"q d\"@example.test>"]):
        put("seeds", "command", f"{i}", line + b"\r\n")
    put("seeds", "data", "dot", b"\x00\x05\x09" + b"\x00" + MSG + b".\r\n")
    put("seeds", "data", "empty", b"\x00\x01\x02\x03.\r\n")
    put("seeds", "data", "bdat", b"\x01\x05\x09\x00" + MSG)
    put("seeds", "data", "bare", b"\x00\x05\x09\x00line\nbare lf\r\n.\r\n")
    # Found by the data target: an unterminated last line finishes with the CRLF added.
    put("seeds", "data", "unterminated-line", b"\x00\x11\x22\x33Subject: x\r\n\r\nlast line without CRLF")
    put("seeds", "message", "mime", MSG)
    put("seeds", "message", "gtube", b"Subject: t\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n")
    put("seeds", "config", "moat", b"\x00" + (root / "config/moat.toml").read_bytes())
    for i, f in enumerate(sorted((root / "rules").glob("*.toml"))):
        sel = {"symbols.toml": 2, "dnsbl.toml": 3}.get(f.name, 1)
        put("seeds", "config", f"rules{i}", bytes([sel]) + f.read_bytes())
    put("seeds", "config", "list", b"\x84192.0.2.0/24\n2001:db8::/32\nexample.test\n")
    put("seeds", "config", "meta", b"\x05(A && !B) || C > 2")
    put("seeds", "proxy", "v1", b"PROXY TCP4 192.0.2.1 198.51.100.1 4711 25\r\nEHLO x\r\n")
    put("seeds", "proxy", "v1u", b"PROXY UNKNOWN\r\n")
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    put("seeds", "proxy", "v2", sig + b"\x21\x11" + struct.pack(">H", 12) + bytes([192, 0, 2, 1, 198, 51, 100, 1]) + struct.pack(">HH", 4711, 25))
    put("seeds", "proxy", "v2local", sig + b"\x20\x00\x00\x00")
    put("seeds", "proxy", "v2six", sig + b"\x21\x21" + struct.pack(">H", 36) + bytes(16) + bytes(15) + b"\x01" + struct.pack(">HH", 1, 25))
    dialogue = (b"EHLO client.example\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n" + MSG +
                b".\r\nQUIT\r\n")
    put("seeds", "session", "one", dialogue)
    put("seeds", "session", "two", dialogue.replace(b"QUIT\r\n", b"") + dialogue[len(b"EHLO client.example\r\n"):])
    put("seeds", "session", "rset", b"EHLO a\r\nMAIL FROM:<a@b.test>\r\nRSET\r\nMAIL FROM:<>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n.\r\nQUIT\r\n")
    put("seeds", "session", "smuggle", b"EHLO a\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nx\r\n\n.\n\r\nMAIL FROM:<evil@e.test>\r\n.\r\nQUIT\r\n")

def from_corpus(corpus, n):
    rnd = random.Random(7)
    files = [p for p in pathlib.Path(corpus).rglob("*.eml")]
    rnd.shuffle(files)
    for i, f in enumerate(files[:n]):
        raw = f.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")[:65536]
        put("corpus", "message", f"c{i}", raw)
        stuffed = b"\r\n".join((b"." + l if l.startswith(b".") else l) for l in raw.split(b"\r\n"))
        if not stuffed.endswith(b"\r\n"):
            stuffed += b"\r\n"
        put("corpus", "data", f"c{i}", b"\x00\x11\x22\x33" + stuffed + b".\r\n")
        if i < n // 4:
            put("corpus", "session", f"c{i}", b"EHLO c.example\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n" + stuffed + b".\r\nQUIT\r\n")

committed()
if len(sys.argv) > 2 and sys.argv[1] == "--corpus":
    from_corpus(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 200)
