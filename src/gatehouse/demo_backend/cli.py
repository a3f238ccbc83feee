"""``gatehouse demo-backend``."""

from __future__ import annotations

import argparse
import sys

from gatehouse.cli_support import listen_arg, positive_int


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser("demo-backend", help="run the demo 'whoami' backend")
    demo.add_argument("--listen", type=listen_arg, default=("127.0.0.1", 9000), metavar="HOST:PORT")
    demo.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate")
    demo.add_argument("--tls-key", metavar="FILE", help="private key for --tls-cert")
    demo.add_argument(
        "--jwks-url",
        metavar="URL",
        help="require a signed identity assertion, checked with this key set "
        "(e.g. http://AP/_gatehouse/jwks.json)",
    )
    demo.add_argument("--audience", metavar="RESOURCE", help="the resource id assertions name")
    demo.add_argument(
        "--assertion-header", default="Gatehouse-Assertion", metavar="NAME", help="its header"
    )
    demo.add_argument(
        "--smtp",
        type=listen_arg,
        metavar="HOST:PORT",
        help="also run the demo SMTP sink there; its mail is listed at .../mail and .../mail.json",
    )
    demo.add_argument(
        "--mail-keep",
        type=positive_int,
        default=200,
        metavar="N",
        help="how many received messages the sink keeps (default 200)",
    )
    demo.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from gatehouse.demo_backend.app import serve

    if bool(args.tls_cert) != bool(args.tls_key):
        print("gatehouse: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    if bool(args.jwks_url) != bool(args.audience):
        print("gatehouse: --jwks-url and --audience go together", file=sys.stderr)
        return 2
    check = None
    if args.jwks_url:
        from gatehouse.demo_backend.assertion_check import AssertionCheck

        check = AssertionCheck(args.jwks_url, args.audience, args.assertion_header)
    sink = None
    if args.smtp:
        from gatehouse.demo_backend.mail_sink import MailBox, MailSink

        smtp_host, smtp_port = args.smtp
        sink = MailSink(smtp_host, smtp_port, MailBox(args.mail_keep))
    host, port = args.listen
    serve(host, port, certfile=args.tls_cert, keyfile=args.tls_key, check=check, sink=sink)
    return 0
