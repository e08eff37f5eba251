"""Contract v1.1: long polls (`wait`). `scripts/conformance.sh --v1` leaves this folder out."""
