"""The guest runtime: ``python3 -m shoal._guest`` runs inside every container and talks to the
container's supervisor over the guest socket (docs/guest-protocol.md).

Stdlib + cloudpickle only; importing this package is cheap and loads nothing else. User code in a
container reaches the supervisor through :mod:`shoal._guest.client` (nested calls).
"""
