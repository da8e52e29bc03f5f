"""Command line of the sandbox courier."""

from sandboxes.courier.server import main

if __name__ == "__main__":
    raise SystemExit(main())
