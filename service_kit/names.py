"""The names of the contract, in one place: what a username, a room name and an
Idempotency-Key may be, as regular expressions (for `re.fullmatch`) with the rule a client
reads when a name breaks it. Used by the services and the terminal client; dependency-free,
like service_kit.config. docs/openapi.yaml states the same patterns for other clients.
"""

USERNAME = r"[A-Za-z0-9_.\-]{3,32}"
USERNAME_RULE = "3 to 32 characters of A-Z, a-z, 0-9, '_', '.' and '-'"

ROOM_NAME = r"[A-Za-z0-9_\-]{1,64}"
ROOM_NAME_RULE = "1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'"

IDEMPOTENCY_KEY = r"[A-Za-z0-9_\-]{1,64}"
IDEMPOTENCY_KEY_RULE = "1 to 64 characters of A-Z, a-z, 0-9, _ and -"
