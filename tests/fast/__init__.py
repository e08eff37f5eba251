"""The fast layer: in-process (Flask's test client, the chat store) on a real FerretDB,
and checks that start no process. `make test-fast` runs it."""
