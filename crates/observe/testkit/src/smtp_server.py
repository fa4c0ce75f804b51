"""A real SMTP server for the email tests: aiosmtpd (Debian's python3-aiosmtpd) with STARTTLS
and AUTH, writing each message it accepts as one JSON file parsed by Python's own email
package, so the test checks what a mail client would read.

usage: smtp_server.py PORT OUT_DIR CERT KEY USER PASSWORD
A file OUT_DIR/answer holding an SMTP reply ("451 4.3.0 try later") makes it refuse messages
with that reply until the file is removed."""

import json
import os
import ssl
import sys
import time
from email import policy
from email.parser import BytesParser

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, out, cert, key, user, password = sys.argv[1:7]


class Handler:
    def __init__(self):
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        try:
            with open(os.path.join(out, "answer")) as f:
                answer = f.read().strip()
            if answer:
                return answer
        except FileNotFoundError:
            pass
        raw = envelope.original_content or envelope.content
        msg = BytesParser(policy=policy.default).parsebytes(raw)
        plain = msg.get_body(("plain",))
        html = msg.get_body(("html",))
        login = session.auth_data
        if isinstance(login, LoginPassword):
            login = login.login
        if isinstance(login, bytes):
            login = login.decode()
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "auth_user": login,
            "tls": bool(session.ssl),
            "from": str(msg["From"]),
            "to": str(msg["To"]),
            "subject": str(msg["Subject"]),
            "message_id": str(msg["Message-ID"]),
            "references": str(msg["References"] or ""),
            "in_reply_to": str(msg["In-Reply-To"] or ""),
            "content_type": msg.get_content_type(),
            "text": plain.get_content() if plain is not None else None,
            "html": html.get_content() if html is not None else None,
            "defects": [str(d) for d in msg.defects],
        }
        self.count += 1
        name = os.path.join(out, "%06d-%d.json" % (self.count, time.time_ns()))
        with open(name + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(name + ".tmp", name)
        return "250 OK queued"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == user.encode()
        and auth_data.password == password.encode()
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
controller = Controller(
    Handler(),
    hostname="127.0.0.1",
    port=int(port),
    tls_context=context,
    require_starttls=True,
    authenticator=authenticator,
    auth_required=True,
    auth_require_tls=True,
)
controller.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
