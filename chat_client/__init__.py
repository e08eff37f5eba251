"""A terminal client for chatsys: `python -m chat_client --help`.

It speaks only the service contract (docs/chat-client.md) and needs nothing but requests.
"""
