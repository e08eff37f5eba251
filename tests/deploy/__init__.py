"""The deploy layer: the packagings (Docker and Compose, systemd, the VM boot, Kubernetes)."""
