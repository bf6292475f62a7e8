"""Entry point of containers: ``python3 -m shoal._guest`` (environment: docs/guest-protocol.md)."""

from .runtime import main

main()
