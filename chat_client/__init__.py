"""A terminal client for chatsys: `python -m chat_client --help`.

It speaks only the service contract (docs/chat-client.md). It needs requests and click, and from
this project only service_kit's names and config modules (standard library alone, no Flask).
"""
