"""Gives the API under test something to find: a custom channel, and
conversations opened by contacts writing in over it (signed webhooks, as a
channel sends them), so the operations on a conversation or a contact reach
one through the document's links instead of only answering 404.

Usage: seed.py GATEWAY_URL WEBHOOK_URL_TEMPLATE TOKEN
(WEBHOOK_URL_TEMPLATE as the dev server prints it, with `{channel_id}`.)
"""

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CONTACTS = [
    ("+34600000001", "Ana", "Hola, ¿mi pedido?"),
    ("+34600000002", "Bruno", "Where is my parcel?"),
    ("+34600000003", None, "📦"),
]


def call(method, url, token, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "authorization": f"Bearer {token}",
        "content-type": "application/json",
    })
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def main():
    gateway, webhook_template, token = sys.argv[1:4]
    # Replies go to a port nothing listens on: dispatch keeps failing them,
    # which is not what this check looks at.
    channel = call("POST", f"{gateway}/v1/channels", token, {
        "kind": "custom",
        "name": "API check",
        "outbound_url": "http://127.0.0.1:9/",
    })
    hook = webhook_template.replace("{channel_id}", channel["id"])
    sender = Path(__file__).resolve().parents[3] / "scripts" / "dev-webhook.py"
    for number, (external_id, name, text) in enumerate(CONTACTS):
        sender_info = {"external_id": external_id}
        if name:
            sender_info["display_name"] = name
        event = {
            "type": "message.inbound",
            "message": {"external_id": f"seed-{number}", "sender": sender_info, "text": text},
        }
        subprocess.run(
            [sys.executable, str(sender), hook, channel["secret"], json.dumps(event)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    # Conversations are opened from the events, a moment later.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        page = call("GET", f"{gateway}/v1/conversations", token)
        if len(page["items"]) >= len(CONTACTS):
            print(f"seeded a channel and {len(page['items'])} conversations")
            return
        time.sleep(0.2)
    sys.exit("seed: the conversations were not opened within 30 s")


if __name__ == "__main__":
    main()
