#!/usr/bin/env python3
"""A deliberately imperfect MCP server over stdio for Alou's integration tests.

Options:
  --version V      the protocolVersion it answers to initialize (default: the one asked for)
  --silent         never answers anything (a hung server)
  --tools a,b      extra tool names (besides echo, pid, hang, garbage, crash, grow, cancels)
  --page N         tools/list page size (default 3: forces pagination)
Tools:
  echo {text}      -> "echo: <text>"
  pid              -> its process id
  hang             -> never answers
  garbage          -> writes malformed lines first, then answers "ok"
  crash            -> exits at once with code 3
  grow             -> adds a tool "grown" and sends notifications/tools/list_changed
  cancels          -> the notifications/cancelled it received, as JSON 
  (an extra tool)  -> "extra:<name>"
"""
import json
import os
import sys

args = sys.argv[1:]
version = None
silent = False
extra = []
page = 3
i = 0
while i < len(args):
    a = args[i]
    if a == "--version":
        version = args[i + 1]; i += 1
    elif a == "--silent":
        silent = True
    elif a == "--tools":
        extra = [t for t in args[i + 1].split(",") if t]; i += 1
    elif a == "--page":
        page = int(args[i + 1]); i += 1
    i += 1

SCHEMA = {"type": "object", "properties": {}, "additionalProperties": True}
tools = [
    {"name": "echo", "description": "echoes text", "annotations": {"readOnlyHint": True},
     "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
    {"name": "pid", "description": "its process id", "inputSchema": SCHEMA},
    {"name": "hang", "description": "never answers", "inputSchema": SCHEMA},
    {"name": "garbage", "description": "malformed output, then ok", "inputSchema": SCHEMA},
    {"name": "crash", "description": "exits", "inputSchema": SCHEMA},
    {"name": "grow", "description": "adds a tool", "inputSchema": SCHEMA},
    {"name": "cancels", "description": "the cancellations it received", "inputSchema": SCHEMA},
] + [{"name": t, "description": "extra", "inputSchema": SCHEMA} for t in extra]


def send(msg):
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def result(mid, res):
    send({"jsonrpc": "2.0", "id": mid, "result": res})


def text(t):
    return {"content": [{"type": "text", "text": t}], "isError": False}


cancels = []  # params of every notifications/cancelled received
sys.stderr.write("fake mcp server starting\n")
sys.stderr.flush()
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    msg = json.loads(line)
    if silent or "method" not in msg:
        continue
    if "id" not in msg:
        if msg["method"] == "notifications/cancelled":
            cancels.append(msg.get("params"))
        continue
    mid, method, params = msg["id"], msg["method"], msg.get("params") or {}
    if method == "initialize":
        result(mid, {"protocolVersion": version or params.get("protocolVersion"),
                     "capabilities": {"tools": {"listChanged": True}},
                     "serverInfo": {"name": "fake", "version": "1"}})
    elif method == "ping":
        result(mid, {})
    elif method == "tools/list":
        start = int(params.get("cursor") or 0)
        res = {"tools": tools[start:start + page]}
        if start + page < len(tools):
            res["nextCursor"] = str(start + page)
        result(mid, res)
    elif method == "tools/call":
        name = params.get("name")
        a = params.get("arguments") or {}
        if name == "echo":
            result(mid, text("echo: " + str(a.get("text"))))
        elif name == "pid":
            result(mid, text(str(os.getpid())))
        elif name == "hang":
            pass
        elif name == "garbage":
            sys.stdout.write("this is not json\n")
            sys.stdout.write('{"jsonrpc":"1.0","id":"x"}\n')
            sys.stdout.write('{"jsonrpc":"2.0","id":987654,"result":{}}\n')
            sys.stdout.flush()
            result(mid, text("ok"))
        elif name == "cancels":
            result(mid, text(json.dumps(cancels)))
        elif name == "crash":
            sys.exit(3)
        elif name == "grow":
            if not any(t["name"] == "grown" for t in tools):
                tools.append({"name": "grown", "description": "new", "inputSchema": SCHEMA})
            result(mid, text("grown"))
            send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        elif name in extra:
            result(mid, text("extra:" + name))
        else:
            send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32602, "message": "Unknown tool: " + str(name)}})
    else:
        send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": "Method not found"}})
