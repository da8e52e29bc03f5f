"""A sandbox payment gateway: run it with ``python -m sandboxes.payment_gateway`` (see docs/payments.md)."""
