"""Command line of the sandbox payment gateway."""

from sandboxes.payment_gateway.server import main

if __name__ == "__main__":
    raise SystemExit(main())
