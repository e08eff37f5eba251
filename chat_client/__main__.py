"""Entry point of `python -m chat_client`."""

from chat_client.cli import main

raise SystemExit(main())
