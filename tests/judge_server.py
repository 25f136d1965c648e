"""A chat completions server on loopback for judge tests: scripted failures, then replies
from a function of the request; it records what it received."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    def __init__(self, reply=lambda messages: "7 5\nok"):
        self.reply = reply
        self.script: list = []  # per request, first: (status, body, headers) or ("sleep", seconds)
        self.received: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.received.append({"path": self.path, "body": body,
                                        "auth": self.headers.get("Authorization")})
                step = server.script.pop(0) if server.script else None
                if step and step[0] == "sleep":
                    time.sleep(step[1])
                    step = None
                if step is None:
                    content = server.reply(body["messages"])
                    step = (200, json.dumps({"choices": [{"message": {"role": "assistant",
                                                                      "content": content}}]}), {})
                status, text, headers = step
                data = text.encode()
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out first
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
