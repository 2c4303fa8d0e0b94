"""A real SMTP server for btic's notification tests: aiosmtpd 1.4 storing every message
it accepts in a maildir (DIR/new/), optionally with STARTTLS and AUTH (PLAIN, LOGIN) for
one account, which it then requires. Prints "listening on 127.0.0.1:PORT" when it
answers and serves until it is killed.

    python3 smtp_server.py --port PORT --maildir DIR [--cert PEM --key PEM]
                           [--user NAME --password TEXT]
"""

import argparse
import logging
import ssl
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword


def main():
    # aiosmtpd 1.4 logs a warning about its own use of a deprecated field at every AUTH.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()

    tls = None
    if args.cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.cert, args.key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == args.user.encode()
            and auth_data.password == args.password.encode()
        )
        return AuthResult(success=ok, handled=False)

    auth = {}
    if args.user:
        auth = dict(
            authenticator=authenticator,
            auth_required=True,
            auth_require_tls=tls is not None,
        )
    controller = Controller(
        Mailbox(args.maildir),
        hostname="127.0.0.1",
        port=args.port,
        tls_context=tls,
        require_starttls=tls is not None,
        **auth,
    )
    controller.start()
    print(f"listening on 127.0.0.1:{args.port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
