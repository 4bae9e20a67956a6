#!/usr/bin/env python3
"""Send a signed custom-channel webhook to TELENET (Standard Webhooks).

Usage: dev-webhook.py WEBHOOK_URL SECRET JSON_BODY [WEBHOOK_ID]
Prints the HTTP status and the answer.
"""
import base64
import hashlib
import hmac
import sys
import time
import urllib.error
import urllib.request
import uuid

url, secret, body = sys.argv[1], sys.argv[2], sys.argv[3].encode()
msg_id = sys.argv[4] if len(sys.argv) > 4 else f"wh_{uuid.uuid4().hex}"
ts = str(int(time.time()))
key = base64.b64decode(secret[len("whsec_"):])
signature = "v1," + base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
request = urllib.request.Request(url, data=body, method="POST", headers={
    "content-type": "application/json",
    "webhook-id": msg_id,
    "webhook-timestamp": ts,
    "webhook-signature": signature,
})
try:
    with urllib.request.urlopen(request) as response:
        print(response.status, response.read().decode())
except urllib.error.HTTPError as error:
    print(error.code, error.read().decode())
    sys.exit(1)
