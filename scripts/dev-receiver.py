#!/usr/bin/env python3
"""A custom channel's receiving end for trying TELENET by hand.

Verifies the Standard Webhooks signature of each outbound message with the
channel secret, prints the message, and answers {"external_id": "..."} the way
a real receiver may. Usage: dev-receiver.py PORT SECRET
"""
import base64
import hashlib
import hmac
import http.server
import itertools
import json
import sys
import time

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
SECRET = sys.argv[2] if len(sys.argv) > 2 else ""
COUNTER = itertools.count(1)


def valid(headers, body):
    if not SECRET.startswith("whsec_"):
        return False
    key = base64.b64decode(SECRET[len("whsec_"):])
    msg_id, ts = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "0")
    if abs(time.time() - int(ts)) > 300:
        return False
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(mac).decode()
    return any(hmac.compare_digest(expected, s) for s in headers.get("webhook-signature", "").split())


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if not valid(self.headers, body):
            self.send_response(401)
            self.end_headers()
            print("rejected: bad signature", flush=True)
            return
        message = json.loads(body)["message"]
        external_id = f"out-{next(COUNTER)}"
        print(f"to {message['recipient']['external_id']}: {message['text']!r} -> {external_id}", flush=True)
        for attachment in message.get("attachments", []):
            print(f"  {attachment.get('kind')} {attachment.get('mime_type')}: {attachment.get('url') or attachment.get('blob_id')}", flush=True)
        reply = json.dumps({"external_id": external_id}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


print(f"receiving on http://127.0.0.1:{PORT}/", flush=True)
http.server.HTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
