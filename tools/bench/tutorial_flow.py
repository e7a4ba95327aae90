#!/usr/bin/env python3
"""The typical M-Pesa STK push tutorial, as a benchmark baseline.

This is the flow most STK push tutorials show (a Flask app), rewritten on the Python 3.11
standard library so that its own overhead stays small and it installs nothing. Every
`POST /pay` makes two Daraja requests, each on a new connection: a fresh OAuth token, then
the STK push. Nothing is stored: no idempotency, no pending record, no callback handling,
no STK query. The bench compares it, side by side, with this project's `POST /payments`.

The bench starts it against the Daraja simulator and reads the port from its first line:

    python3 tools/bench/tutorial_flow.py --listen 127.0.0.1:0 \\
        --daraja http://127.0.0.1:PORT --shortcode 174379 --passkey PASSKEY \\
        --consumer-key K --consumer-secret S --callback-url http://127.0.0.1:9/callback

It prints `listening on http://127.0.0.1:<port>` once ready, then serves
`POST /pay {"phone": "0712345678", "amount": 100, "reference": "INV-1"}` and answers
with Daraja's status and JSON body as they came.
"""

import argparse
import base64
import json
import sys
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Daraja's clock: Africa/Nairobi, UTC+3 all year.
NAIROBI = timezone(timedelta(hours=3))
# `requests` has no timeout by default; a bound keeps a stuck Daraja from piling up threads.
DARAJA_TIMEOUT_SECS = 30
MAX_BODY_BYTES = 64 * 1024


class DarajaUnreachable(Exception):
    """No HTTP answer from Daraja, or one that is not JSON."""


def normalise_phone(phone):
    """07…/01… → 2547…/2541…, +254… → 254…, the simple way tutorials do; no validation."""
    phone = str(phone).strip().replace(" ", "")
    if phone.startswith("+"):
        phone = phone[1:]
    if phone.startswith("0"):
        phone = "254" + phone[1:]
    return phone


def call_daraja(request):
    """(status, JSON body) of one Daraja request, error statuses included.

    `urllib.request.urlopen` opens a new connection for every request and closes it after
    (it sends `Connection: close`), as `requests.get`/`requests.post` without a Session do
    in the tutorials: one TCP connect per Daraja call is part of what this baseline measures.
    """
    try:
        with urllib.request.urlopen(request, timeout=DARAJA_TIMEOUT_SECS) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
        error.close()
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise DarajaUnreachable(str(error)) from error
    try:
        return status, json.loads(raw)
    except ValueError as error:
        raise DarajaUnreachable(f"HTTP {status} with a body that is not JSON") from error


def fetch_token(config):
    """Step 1: a new OAuth token on every payment, as in the tutorials."""
    credentials = f"{config.consumer_key}:{config.consumer_secret}".encode()
    request = urllib.request.Request(
        f"{config.daraja}/oauth/v1/generate?grant_type=client_credentials",
        headers={"Authorization": "Basic " + base64.b64encode(credentials).decode()},
    )
    return call_daraja(request)


def stk_push(config, token, phone, amount, reference):
    """Step 2: the STK push, with one timestamp for both Timestamp and Password."""
    timestamp = datetime.now(NAIROBI).strftime("%Y%m%d%H%M%S")
    password = base64.b64encode(
        f"{config.shortcode}{config.passkey}{timestamp}".encode()
    ).decode()
    body = {
        "BusinessShortCode": config.shortcode,
        "Password": password,
        "Timestamp": timestamp,
        "TransactionType": "CustomerPayBillOnline",
        "Amount": amount,
        "PartyA": phone,
        "PartyB": config.shortcode,
        "PhoneNumber": phone,
        "CallBackURL": config.callback_url,
        "AccountReference": reference,
        "TransactionDesc": "Payment",
    }
    request = urllib.request.Request(
        f"{config.daraja}/mpesa/stkpush/v1/processrequest",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    return call_daraja(request)


def pay(config, payment):
    """(status, JSON body) answered for one `POST /pay` body."""
    if not isinstance(payment, dict) or not all(
        k in payment for k in ("phone", "amount", "reference")
    ):
        return 400, {"error": "expected a JSON object with phone, amount and reference"}
    phone = normalise_phone(payment["phone"])
    try:
        status, answer = fetch_token(config)
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if status != 200 or not token:
            # Daraja's own refusal (bad credentials, …), passed on as it came.
            return status if status >= 400 else 502, answer
        return stk_push(config, token, phone, payment["amount"], payment["reference"])
    except DarajaUnreachable as error:
        return 502, {"error": "Daraja unreachable", "detail": str(error)}


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keep-alive towards the bench client, as the Flask dev server does, so the
    # measured difference is on the Daraja side, not in the client's own connects.
    protocol_version = "HTTP/1.1"
    # One buffered write per answer (flushed after each request) and no Nagle: otherwise
    # headers and body leave in two small writes and delayed ACK adds ~40 ms per request.
    wbufsize = -1
    disable_nagle_algorithm = True
    config = None  # set in main()

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        """Silent: per-request logging would distort the timings."""

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            return self.answer(411, {"error": "Content-Length required"})
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            return self.answer(400, {"error": "bad Content-Length"})
        raw = self.rfile.read(length)
        if self.path.split("?", 1)[0] != "/pay":
            return self.answer(404, {"error": "not found"})
        try:
            payment = json.loads(raw)
        except ValueError:
            return self.answer(400, {"error": "body is not JSON"})
        try:
            status, body = pay(self.config, payment)
        except Exception as error:  # never let one request take the server down
            status, body = 500, {"error": "internal error", "detail": repr(error)}
        self.answer(status, body)

    def do_GET(self):
        if self.path == "/health":
            return self.answer(200, {"status": "ok"})
        self.answer(404, {"error": "not found"})


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port (port 0 picks a free one)")
    parser.add_argument("--daraja", required=True, help="Daraja base URL, e.g. http://127.0.0.1:8089")
    parser.add_argument("--shortcode", default="174379")
    parser.add_argument("--passkey", required=True)
    parser.add_argument("--consumer-key", required=True)
    parser.add_argument("--consumer-secret", required=True)
    parser.add_argument("--callback-url", required=True)
    args = parser.parse_args(argv)
    args.daraja = args.daraja.rstrip("/")
    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit():
        parser.error("--listen must be host:port")
    args.address = (host.strip("[]") or "127.0.0.1", int(port))
    return args


def main(argv=None):
    config = parse_args(argv)
    Handler.config = config
    server = ThreadingHTTPServer(config.address, Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
